"""SecretBox: MultiFernet encryption of tenant secrets with key rotation."""
import pytest

from security import SecurityError
from security.secrets import SecretBox, SecretError


def test_encrypt_decrypt_roundtrip() -> None:
    box = SecretBox([SecretBox.generate_key()])
    token = box.encrypt("shpat_123")
    assert token != "shpat_123" and "shpat_123" not in token
    assert box.decrypt(token) == "shpat_123"
    assert box.encrypt("x") != box.encrypt("x")  # random IV


def test_rotation_old_key_still_decrypts_and_rotate_reencrypts() -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    old_box = SecretBox([old])
    token = old_box.encrypt("sk_live_abc")
    rotated_box = SecretBox.from_setting(f" {new} , {old} ,")
    assert rotated_box.decrypt(token) == "sk_live_abc"
    rotated = rotated_box.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == "sk_live_abc"
    with pytest.raises(SecretError):
        old_box.decrypt(rotated)


def test_errors_are_security_errors() -> None:
    with pytest.raises(SecretError):
        SecretBox([])
    with pytest.raises(SecretError):
        SecretBox.from_setting("not-a-key")
    box = SecretBox([SecretBox.generate_key()])
    with pytest.raises(SecurityError):
        box.decrypt("garbage")
    with pytest.raises(SecretError):
        SecretBox([SecretBox.generate_key()]).decrypt(box.encrypt("x"))
    with pytest.raises(SecretError):
        box.rotate("garbage")
