"""Reading the worker's priority back from /proc (runtime.priority)."""
import os

from runtime.priority import autogroup_nice, nice_of, parse_autogroup


def test_an_autogroup_line_gives_its_nice_value():
    assert parse_autogroup("/autogroup-85 nice 0\n") == 0
    assert parse_autogroup("/autogroup-3 nice 10\n") == 10
    assert parse_autogroup("/autogroup-3 nice -5\n") == -5


def test_a_task_in_no_autogroup_has_an_empty_file_and_no_autogroup_nice():
    # the kernel prints nothing for a task whose task group is not an autogroup (a cgroup of its
    # own, as on CI's machine); CI once failed on exactly this
    assert parse_autogroup("") is None
    assert parse_autogroup("\n") is None


def test_this_process_reads_back():
    assert nice_of(os.getpid()) == os.nice(0)
    assert autogroup_nice(os.getpid()) in (None, *range(-20, 20))
    assert autogroup_nice(2 ** 22 + 12345) is None  # no such process
