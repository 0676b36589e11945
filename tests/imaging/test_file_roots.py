"""file:// URLs against file_roots: what is read in place, and every way out that is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from primaa.imaging.file_roots import FileRoots, FileUrlRefused, is_file_url

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A root with a slide, a secret beside the root, and links in every direction."""
    root = tmp_path / "slides"
    (root / "case").mkdir(parents=True)
    slide = root / "case" / "a.svs"
    slide.write_bytes(b"II*\x00" + b"\x00" * 60)
    outside = tmp_path / "secret"
    outside.mkdir()
    secret = outside / "passwd"
    secret.write_text("root:x:0:0")
    (root / "escape.svs").symlink_to(secret)
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "inside.svs").symlink_to(slide)
    (root / "empty.svs").write_bytes(b"")
    os.mkfifo(root / "fifo.svs")
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(root, target_is_directory=True)
    return {
        "root": root,
        "slide": slide,
        "secret": secret,
        "outside": outside,
        "linked_root": linked_root,
    }


def url(path: Path | str) -> str:
    return f"file://{path}"


def test_a_file_under_a_root_resolves_to_its_real_path(layout: dict[str, Path]) -> None:
    roots = FileRoots([layout["root"]])
    assert roots.resolve(url(layout["slide"])) == layout["slide"]
    assert roots.resolve(f"file://localhost{layout['slide']}") == layout["slide"]
    assert roots.resolve(url(layout["root"] / "inside.svs")) == layout["slide"], "link inside"
    assert roots.resolve(url(layout["root"] / "case" / ".." / "case" / "a.svs")) == layout["slide"]


def test_percent_encoding_is_decoded_before_the_check(layout: dict[str, Path]) -> None:
    roots = FileRoots([layout["root"]])
    encoded = str(layout["slide"]).replace("/case/", "/%63ase/")
    assert roots.resolve(url(encoded)) == layout["slide"]
    sneaky = f"{layout['root']}/%2e%2e/secret/passwd"
    with pytest.raises(FileUrlRefused, match="outside the directories"):
        roots.resolve(url(sneaky))
    slash = f"{layout['root']}/..%2Fsecret%2Fpasswd"
    with pytest.raises(FileUrlRefused, match="outside the directories"):
        roots.resolve(url(slash))
    with pytest.raises(FileUrlRefused, match="NUL"):
        roots.resolve(url(f"{layout['slide']}%00.png"))


def test_a_root_that_is_itself_a_symlink_works_both_ways(layout: dict[str, Path]) -> None:
    through_link = FileRoots([layout["linked_root"]])
    assert through_link.resolve(url(layout["slide"])) == layout["slide"]
    assert through_link.resolve(url(layout["linked_root"] / "case" / "a.svs")) == layout["slide"]
    plain = FileRoots([layout["root"]])
    assert plain.resolve(url(layout["linked_root"] / "case" / "a.svs")) == layout["slide"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("escape.svs", "outside the directories"),
        ("escape-dir/passwd", "outside the directories"),
        ("../secret/passwd", "outside the directories"),
        ("case", "is a directory"),
        ("fifo.svs", "not a regular file"),
        ("empty.svs", "is empty"),
        ("missing.svs", "no such file"),
    ],
)
def test_refused_paths_say_why(layout: dict[str, Path], name: str, message: str) -> None:
    roots = FileRoots([layout["root"]])
    with pytest.raises(FileUrlRefused, match=message) as refused:
        roots.resolve(f"file://{layout['root']}/{name}")
    assert str(layout["outside"]) not in str(refused.value), "never where a link leads"


def test_no_roots_refuses_everything_and_says_how_to_allow(layout: dict[str, Path]) -> None:
    with pytest.raises(FileUrlRefused, match="PRIMAA_FILE_ROOTS"):
        FileRoots([]).resolve(url(layout["slide"]))


def test_a_missing_root_refuses_what_would_be_under_it(tmp_path: Path) -> None:
    roots = FileRoots([tmp_path / "not-mounted"])
    with pytest.raises(FileUrlRefused, match="no such file"):
        roots.resolve(url(tmp_path / "not-mounted" / "a.svs"))
    with pytest.raises(FileUrlRefused, match="outside"):
        roots.resolve(url(SVS))


def test_a_prefix_is_not_a_parent(tmp_path: Path) -> None:
    """``/data/slides-private`` is not under ``/data/slides``."""
    (tmp_path / "slides").mkdir()
    neighbour = tmp_path / "slides-private"
    neighbour.mkdir()
    (neighbour / "a.svs").write_bytes(b"x")
    with pytest.raises(FileUrlRefused, match="outside"):
        FileRoots([tmp_path / "slides"]).resolve(url(neighbour / "a.svs"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("file://fileserver/share/a.svs", "host 'fileserver'"),
        ("file://localhost:22/a.svs", "host"),
        ("file://user@localhost/a.svs", "host"),
        ("file:relative/a.svs", "absolute path"),
        ("file:///{root}/case/a.svs?x=1", "query"),
        ("file:///{root}/case/a.svs#frag", "fragment"),
    ],
)
def test_malformed_file_urls_are_refused(layout: dict[str, Path], bad: str, message: str) -> None:
    roots = FileRoots([layout["root"]])
    with pytest.raises(FileUrlRefused, match=message):
        roots.resolve(bad.format(root=str(layout["root"]).lstrip("/")))


def test_mirax_needs_its_data_directory_under_a_root(tmp_path: Path) -> None:
    """OpenSlide reads x.mrxs and the directory x/ beside it: both must be allowed."""
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Slidedat.ini").write_text("[GENERAL]\n")
    slide = root / "x.mrxs"
    slide.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 60)
    roots = FileRoots([root])
    with pytest.raises(FileUrlRefused, match="without its data directory x/"):
        roots.resolve(url(slide))
    (root / "x").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FileUrlRefused, match=r"data directory of .* is outside"):
        roots.resolve(url(slide))
    (root / "x").unlink()
    (root / "x").mkdir()
    (root / "x" / "Slidedat.ini").write_text("[GENERAL]\n")
    assert roots.resolve(url(slide)) == slide
    (root / "x" / "Data0000.dat").symlink_to(elsewhere / "stolen.dat")
    with pytest.raises(FileUrlRefused, match=r"Data0000\.dat \(a file of .*\) is outside"):
        roots.resolve(url(slide))


def test_is_file_url() -> None:
    assert is_file_url("file:///a")
    assert is_file_url("FILE:///a")
    assert not is_file_url("https://a/b")
    assert not is_file_url("fil")


def test_mirax_index_names_that_lead_out_are_refused(tmp_path: Path) -> None:
    """OpenSlide opens INDEXFILE and FILE_n relative to x/: "../.." must not lead out."""
    root = tmp_path / "root"
    (root / "x" / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.dat"
    secret.write_bytes(b"not yours")
    slide = root / "x.mrxs"
    slide.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 60)
    (root / "x" / "Data0000.dat").write_bytes(b"data")
    slidedat = root / "x" / "Slidedat.ini"
    roots = FileRoots([root])

    def index(*files: str) -> None:
        names = "".join(f"FILE_{n}={name}\n" for n, name in enumerate(files))
        slidedat.write_text(
            f"[HIERARCHICAL]\nINDEXFILE=Index.dat\n[DATAFILE]\nFILE_COUNT={len(files)}\n{names}"
        )

    index("Data0000.dat")
    assert roots.resolve(url(slide)) == slide
    index("Data0000.dat", "../../secret.dat")
    with pytest.raises(FileUrlRefused, match=r"\.\./\.\./secret\.dat \(named by Slidedat\.ini"):
        roots.resolve(url(slide))
    (root / "x" / "sub" / "link.dat").symlink_to(secret)
    index("sub/link.dat")
    with pytest.raises(FileUrlRefused, match="is outside"):
        roots.resolve(url(slide))
