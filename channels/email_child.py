"""Child process of the mail sandbox (channels/email_sandbox.py): reads whole inbound mails
under the limits of knowledge/extract_html_child.py (address space, no files; the parent kills it
at its wall-clock timeout), with this module's handler.

Run as ``python -I email_child.py MEMORY_BYTES``. A request is ``{"kind": "mime"}`` (a raw MIME
message) or ``{"kind": "form", "content_type": str}`` (an inbound-parse webhook's body); the
answer is ``{"inbound": {...}}`` (Inbound.to_dict), ``{"refused": why}`` (RefusedMail: a tag
flood, MIME parts nested too deeply) or ``{"invalid": why}`` (not a form, no usable field, a
message the parser gives up on), or the loop's own ``{"error": "memory", ...}``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # -I leaves the project off sys.path

# Everything a mail needs is imported before the child limits its memory.
import email.contentmanager  # noqa: E402,F401
import email.headerregistry  # noqa: E402,F401

from channels.email_parse import RefusedMail, mail_of_form, parse_message  # noqa: E402
from channels.errors import ChannelError  # noqa: E402
from knowledge.extract_html_child import main  # noqa: E402


def handle(request: dict, data: bytes) -> dict:
    """The answer to one mail."""
    try:
        if request.get("kind") == "form":
            mail = mail_of_form(str(request.get("content_type") or ""), data)
        else:
            mail = parse_message(data)
    except MemoryError:
        raise  # the loop answers it and exits
    except RefusedMail as err:
        return {"refused": err.message}
    except RecursionError:
        return {"refused": "the message's MIME parts are nested too deeply"}
    except ChannelError as err:
        return {"invalid": err.message}
    except Exception:  # the parsers are lenient: this is a truly broken message
        return {"invalid": "the message could not be parsed"}
    return {"inbound": mail.to_dict()}


if __name__ == "__main__":
    main(sys.argv, handle)
