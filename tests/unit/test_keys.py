"""gateway.keys: the object key layout, and keys mapped back to their tenants."""

from __future__ import annotations

from gateway import keys
from gateway.keys import parse_object_key


def test_keys_map_back_to_tenants() -> None:
    kp = parse_object_key("prj_1/user_123/upl_0123456789abcdef01234567/report.pdf")
    assert kp is not None and (kp.project_id, kp.tenant_id) == ("prj_1", "user_123")
    assert kp.upload_id == "upl_0123456789abcdef01234567"
    other = parse_object_key("prj_1/user_123/manual/x.bin")
    assert other is not None and other.upload_id is None and other.tenant_id == "user_123"
    for outside in ("x/y/z", "prj_1/only", "prj_1//a/b", "prj_1/t/", "random"):
        assert parse_object_key(outside) is None


def test_a_file_path_is_the_key_without_its_project() -> None:
    path = keys.file_path("user_123", "upl_1", "a b.txt")
    key = keys.object_key("prj_1", path)
    assert key == "prj_1/user_123/upl_1/a b.txt"
    assert keys.file_path_of(key) == path
    assert keys.filename_of(key) == "a b.txt"


def test_a_clients_file_path_stays_under_its_project() -> None:
    assert keys.is_safe_file_path("user_123/upl_1/x")
    assert keys.is_safe_file_path("user_123/upl_1/x..y")  # dots inside a name are fine
    for unsafe in ("/etc/passwd", "../prj_2/t/x", "t/../../x", ".."):
        assert not keys.is_safe_file_path(unsafe)
