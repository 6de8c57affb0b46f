"""Object keys, written once: ``{project}/{tenant}/{upload}/{filename}`` in the bucket;
a ``file_path`` is the key without its project prefix (what clients hold)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyParts:
    project_id: str
    tenant_id: str
    upload_id: str | None


def file_path(tenant_id: str, upload_id: str, filename: str) -> str:
    return f"{tenant_id}/{upload_id}/{filename}"


def object_key(project_id: str, path: str) -> str:
    """The bucket key of a project's ``file_path``."""
    return f"{project_id}/{path}"


def file_path_of(key: str) -> str:
    """The ``file_path`` of a bucket key (the key without its project prefix)."""
    return key.split("/", 1)[1]


def is_safe_file_path(path: str) -> bool:
    """A client's ``file_path`` names a key under its own project: not absolute, no
    ``..`` segment."""
    return not path.startswith("/") and ".." not in path.split("/")


def filename_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def parse_object_key(key: str) -> KeyParts | None:
    """``{project}/{tenant}/{upload}/{filename}``; objects written by other means
    under ``{project}/{tenant}/`` still belong to that tenant."""
    parts = key.split("/", 3)
    if len(parts) < 3 or not parts[0].startswith("prj_") or not parts[1] or not parts[2]:
        return None
    upload = parts[2] if len(parts) == 4 and parts[2].startswith("upl_") else None
    return KeyParts(parts[0], parts[1], upload)
