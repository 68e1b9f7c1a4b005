"""The avatar catalog: which ids a session may ask for, and the portrait each one names; and how a
job's metadata picks its avatar (agent/avatar_source.py), falling back to the configured one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.avatar_source import avatar_source, job_avatar_source, requested_avatar_id
from avatar_runtime import DEFAULT_AVATAR, AvatarCatalog, default_avatars_dir
from avatar_runtime.avatars import BUNDLED_PORTRAITS_DIR


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    avatars = tmp_path / "avatars"
    bundled = tmp_path / "bundled"
    avatars.mkdir()
    bundled.mkdir()
    return avatars, bundled


def test_default_directory_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AVATAR_AVATARS_DIR", raising=False)
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    assert default_avatars_dir() == tmp_path / "cache" / "avatars"
    assert AvatarCatalog().directory == tmp_path / "cache" / "avatars"
    monkeypatch.setenv("AVATAR_AVATARS_DIR", str(tmp_path / "mine"))
    assert default_avatars_dir() == tmp_path / "mine"
    monkeypatch.delenv("AVATAR_CACHE")
    monkeypatch.delenv("AVATAR_AVATARS_DIR")
    assert default_avatars_dir() == Path.home() / ".cache" / "avatar-agents" / "avatars"


def test_bundled_portraits_are_listed_and_resolve(tmp_path: Path) -> None:
    catalog = AvatarCatalog(tmp_path / "missing")
    assert catalog.ids()[0] == DEFAULT_AVATAR
    assert "astronaut" in catalog.ids()
    assert catalog.resolve("astronaut") == (BUNDLED_PORTRAITS_DIR / "astronaut.jpg").resolve()
    assert catalog.resolve("astronaut").is_file()  # type: ignore[union-attr]
    assert "astronaut" in catalog and DEFAULT_AVATAR in catalog


def test_default_resolves_to_none_and_is_listed_first(dirs: tuple[Path, Path]) -> None:
    avatars, bundled = dirs
    (avatars / "aaa.png").write_bytes(b"x")
    (avatars / "default.png").write_bytes(b"x")  # cannot shadow the configured source
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.ids() == ["default", "aaa"]
    assert catalog.resolve("default") is None


def test_files_and_packages_in_the_directory(dirs: tuple[Path, Path]) -> None:
    avatars, bundled = dirs
    for name in ("nurse.png", "doctor_2.jpg", "coach-b.jpeg", "pilot.webp"):
        (avatars / name).write_bytes(b"x")
    (avatars / "prepared").mkdir()  # an avatar package
    for name in ("notes.txt", "Upper.png", ".hidden.png", "x.PNG", "a.b.png", "-dash.png"):
        (avatars / name).write_bytes(b"x")
    (avatars / "empty.png").mkdir()  # a directory with an image's name is not an image
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.ids() == ["default", "coach-b", "doctor_2", "nurse", "pilot", "prepared"]
    assert catalog.resolve("nurse") == (avatars / "nurse.png").resolve()
    assert catalog.resolve("doctor_2") == (avatars / "doctor_2.jpg").resolve()
    assert catalog.resolve("coach-b") == (avatars / "coach-b.jpeg").resolve()
    assert catalog.resolve("pilot") == (avatars / "pilot.webp").resolve()
    assert catalog.resolve("prepared") == (avatars / "prepared").resolve()
    for unknown in ("notes", "upper", "Upper", "x", "empty", "a.b", "-dash", "nobody"):
        assert unknown not in catalog
        with pytest.raises(KeyError):
            catalog.resolve(unknown)


def test_the_directory_wins_over_bundled_and_images_over_packages(
    dirs: tuple[Path, Path],
) -> None:
    avatars, bundled = dirs
    (bundled / "astro.jpg").write_bytes(b"bundled")
    (bundled / "only_bundled.png").write_bytes(b"bundled")
    (avatars / "astro.png").write_bytes(b"mine")
    (avatars / "both").mkdir()
    (avatars / "both.webp").write_bytes(b"x")
    (avatars / "both.png").write_bytes(b"x")
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.ids() == ["default", "astro", "both", "only_bundled"]
    assert catalog.resolve("astro") == (avatars / "astro.png").resolve()
    assert catalog.resolve("only_bundled") == (bundled / "only_bundled.png").resolve()
    assert catalog.resolve("both") == (avatars / "both.png").resolve()


def test_entries_appear_and_disappear_without_a_new_catalog(dirs: tuple[Path, Path]) -> None:
    avatars, bundled = dirs
    catalog = AvatarCatalog(avatars, bundled)
    assert "late" not in catalog
    (avatars / "late.png").write_bytes(b"x")
    assert "late" in catalog and "late" in catalog.ids()
    (avatars / "late.png").unlink()
    assert "late" not in catalog and catalog.ids() == ["default"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../secret",
        "..",
        ".",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "x" * 65,
        "ok\n",
        "N\u00fcrse",
        "\u212a",  # the Kelvin sign: lower-cased it would be an ASCII "k"
        "nurse.png",
    ],
)
def test_malformed_ids_are_unknown(dirs: tuple[Path, Path], bad: str) -> None:
    avatars, bundled = dirs
    (avatars / "nurse.png").write_bytes(b"x")
    (avatars / "k.png").write_bytes(b"x")
    catalog = AvatarCatalog(avatars, bundled)
    with pytest.raises(KeyError):
        catalog.resolve(bad)
    assert bad not in catalog


def test_ids_are_found_in_any_case(dirs: tuple[Path, Path]) -> None:
    """Ids are lower case; a lookup folds ASCII case (seed 000's upper-case UUIDs)."""
    avatars, bundled = dirs
    (avatars / "nurse.png").write_bytes(b"x")
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.resolve("Nurse") == catalog.resolve("NURSE") == catalog.resolve("nurse")
    assert "Nurse" in catalog and "Nurse" not in catalog.ids()


def test_non_string_ids_are_unknown(dirs: tuple[Path, Path]) -> None:
    catalog = AvatarCatalog(*dirs)
    for bad in (None, 3, ["default"]):
        assert bad not in catalog
        with pytest.raises(KeyError):
            catalog.resolve(bad)  # type: ignore[arg-type]


def test_symbolic_links_never_lead_out_of_the_directory(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    avatars, bundled = dirs
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (avatars / "escape.png").symlink_to(outside / "secret.png")
    (avatars / "escape_dir").symlink_to(outside)
    (avatars / "itself").symlink_to(avatars)
    (avatars / "loop.png").symlink_to(avatars / "loop.png")
    (avatars / "dangling.png").symlink_to(tmp_path / "nothing.png")
    (avatars / "real.png").write_bytes(b"x")
    (avatars / "alias.png").symlink_to(avatars / "real.png")  # inside: fine
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.ids() == ["default", "alias", "real"]
    for blocked in ("escape", "escape_dir", "itself", "loop", "dangling"):
        with pytest.raises(KeyError):
            catalog.resolve(blocked)
    assert catalog.resolve("alias") == (avatars / "real.png").resolve()


def test_a_symbolic_link_to_the_directory_itself_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "nurse.png").write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(real)
    catalog = AvatarCatalog(link, tmp_path / "none")
    assert catalog.resolve("nurse") == (real / "nurse.png").resolve()


def test_renderer_caches_are_not_avatar_packages(dirs: tuple[Path, Path]) -> None:
    avatars, bundled = dirs
    (avatars / "meshwarp").mkdir()  # meshwarp keeps its prepared rigs here
    (avatars / "meshwarp" / "abc-512x512-v3.npz").write_bytes(b"x")
    catalog = AvatarCatalog(avatars, bundled)
    assert catalog.ids() == ["default"]
    assert "meshwarp" not in catalog


def test_a_missing_directory_lists_only_default_and_bundled(tmp_path: Path) -> None:
    catalog = AvatarCatalog(tmp_path / "nope", tmp_path / "nope-either")
    assert catalog.ids() == ["default"]
    (tmp_path / "file").write_bytes(b"x")
    assert AvatarCatalog(tmp_path / "file", tmp_path / "nope").ids() == ["default"]


# -- job metadata (agent/avatar_source.py) ----------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ("", "default"),
        (None, "default"),
        ("{}", "default"),
        ('{"avatar_id": null}', "default"),
        ('{"avatar_id": "nurse", "session_id": "room_1"}', "nurse"),
        ('{"avatar_id": "default"}', "default"),
        ('{"avatar_id": "../x"}', "../x"),  # resolution rejects it, with a log line
        ('{"avatar_id": 7}', "default"),
        ("[1, 2]", "default"),
        ("not json", "default"),
    ],
)
def test_requested_avatar_id(metadata: str | None, expected: str) -> None:
    assert requested_avatar_id(metadata) == expected


def test_avatar_source_resolves_known_ids_and_falls_back_for_unknown_ones(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    avatars, bundled = dirs
    (avatars / "nurse.png").write_bytes(b"x")
    catalog = AvatarCatalog(avatars, bundled)
    configured = Path("/configured/portrait.png")
    assert avatar_source("default", configured, catalog) == configured
    assert avatar_source("default", None, catalog) is None
    assert avatar_source("nurse", configured, catalog) == (avatars / "nurse.png").resolve()
    with caplog.at_level(logging.ERROR, logger="avatar-agent"):
        assert avatar_source("ghost", configured, catalog) == configured
        assert avatar_source("../../etc/passwd", None, catalog) is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "unknown avatar_id 'ghost'" in errors[0]


def test_job_avatar_source_uses_the_environment_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AVATAR_AVATARS_DIR", str(tmp_path))
    (tmp_path / "nurse.webp").write_bytes(b"x")
    configured = tmp_path / "configured.png"
    meta = json.dumps({"avatar_id": "nurse", "session_id": "s"})
    assert job_avatar_source(meta, configured) == (tmp_path / "nurse.webp").resolve()
    assert (
        job_avatar_source(json.dumps({"avatar_id": "astronaut"}), configured)
        == (BUNDLED_PORTRAITS_DIR / "astronaut.jpg").resolve()
    )
    assert job_avatar_source("", configured) == configured
    assert job_avatar_source(json.dumps({"avatar_id": "ghost"}), None) is None
