"""README.md as a test: the CLI tour runs as written, line by line; the Python block and other claims hold."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsmount.service.config import parse_conf, parse_fstab_options

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
HEX_ID = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------- reading README.md


def section(title: str) -> str:
    """The text under heading `title` (any level), up to the next heading (subheadings too)."""
    lines = README.read_text().splitlines()
    in_fence, start = False, None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"(#+) (.*)", line)
        if not m:
            continue
        if start is None and m.group(2).strip() == title:
            start = i + 1
        elif start is not None:
            return "\n".join(lines[start:i])
    assert start is not None, f"README.md has no heading {title!r}"
    return "\n".join(lines[start:])


def indented_blocks(text: str) -> list[list[str]]:
    """Markdown's indented code blocks (4 spaces; blank lines inside a block belong to it), dedented."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in [*text.splitlines(), "end"]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line[4:])
        elif current:
            while current and not current[-1].strip():
                current.pop()
            blocks.append(current)
            current = []
    return blocks


def fenced_block(text: str, lang: str) -> str:
    m = re.search(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)
    assert m, f"no ```{lang} block"
    return m.group(1)


def commands(block: list[str]) -> list[str]:
    """Shell lines to run: comment-only and blank lines are skipped, `\\` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in block:
        if pending:
            line, pending = pending + line, ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    assert not pending, "a continuation line ends the block"
    return out


def tour() -> list[str]:
    blocks = indented_blocks(section("A tour of the CLI"))
    assert len(blocks) == 1, "the tour is one code block"
    return commands(blocks[0])


def without_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


# ---------------------------------------------------------------- running shell lines


@dataclass
class Step:
    line: str  # as run
    origin: str  # as README.md writes it
    rc: int | None  # None: never reached
    output: str


class Tour:
    """Shell lines run in order in ONE bash (cd and export carry over); each one's exit code and output."""

    def __init__(self, lines: list[str], tmp: Path, origins: list[str] | None = None) -> None:
        origins = origins or lines
        self.steps = [Step(line, origin, None, "") for line, origin in zip(lines, origins, strict=True)]
        self.tmp = tmp
        self.scratch: Path | None = None

    def run(self, env: dict[str, str], timeout: float = 120) -> None:
        # The README lines go in unchanged; only markers between them are added, so that each
        # line's exit code and output can be told apart. set -e stops at the first failure.
        script = ["set -euo pipefail"]
        for i, step in enumerate(self.steps):
            script += [
                f"printf '\\n::step {i}::\\n'",
                step.line,
                f'__rc=$?; printf \'\\n::rc {i} %d::\\n\' "$__rc"; [ "$__rc" = 0 ] || exit "$__rc"',
            ]
        script.append("printf '\\n::pwd %s::\\n' \"$PWD\"")
        path = self.tmp / "tour.sh"
        path.write_text("\n".join(script) + "\n")
        log = self.tmp / "tour.log"
        with open(log, "wb") as out:  # a file, not a pipe: a mount daemon may keep it open
            proc = subprocess.run(
                ["bash", str(path)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        text = log.read_text(errors="replace")
        current: Step | None = None
        started: list[Step] = []
        for chunk in re.split(r"\n?(::(?:step|rc|pwd) [^\n]*::)\n", text):
            if m := re.fullmatch(r"::step (\d+)::", chunk):
                current = self.steps[int(m.group(1))]
                started.append(current)
            elif m := re.fullmatch(r"::rc (\d+) (\d+)::", chunk):
                self.steps[int(m.group(1))].rc = int(m.group(2))
                current = None
            elif m := re.fullmatch(r"::pwd (.*)::", chunk):
                self.scratch = Path(m.group(1))
            elif current is not None:
                current.output += chunk
        if started and started[-1].rc is None:  # set -e stopped bash inside this line
            started[-1].rc = proc.returncode
        readme = README.read_text().splitlines()
        for step in self.steps:
            numbers = [n for n, line in enumerate(readme, 1) if line.strip() == step.origin.strip()]
            where = f"README.md:{numbers[0]}" if numbers else "README.md"
            assert step.rc is not None, f"{where} never ran (an earlier line failed): {step.origin}"
            assert step.rc == 0, f"{where} exited {step.rc}:\n  {step.line}\n{step.output.strip()}"

    def out(self, command: str) -> str:
        """The output of the tour line that is exactly `command` (its trailing comment aside)."""
        found = [s for s in self.steps if without_comment(s.line) == command]
        assert len(found) == 1, f"the tour has {len(found)} lines {command!r}"
        return found[0].output


def tour_env(tmp: Path) -> dict[str, str]:
    """A fresh user's shell: the XDG folders of isolated_env, the venv's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "/usr/bin:/bin")])
    env["TMPDIR"] = str(tmp / "tmp")  # where the tour's `mktemp -d` goes
    (tmp / "tmp").mkdir(exist_ok=True)
    env.pop("CDPATH", None)
    return env


def fsmount(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(VENV_BIN / "fsmount"), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"fsmount {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def mnt_root(tmp_path: Path) -> Iterator[Path]:
    """Stands in for /mnt; whatever is still mounted below it afterwards is unmounted."""
    root = tmp_path / "mnt"
    root.mkdir()
    yield root
    for d in sorted(root.iterdir()):
        if os.path.ismount(d):
            subprocess.run(["fusermount3", "-u", str(d)], check=False)
        if os.path.ismount(d):
            subprocess.run(["fusermount3", "-uz", str(d)], check=False)


# ---------------------------------------------------------------- the tour


def test_the_cli_tour_runs_as_written(
    tmp_path: Path, mnt_root: Path, require_fuse: None, isolated_env: Path
) -> None:
    # The ONLY rewrite of README lines: /mnt/... becomes a folder of this test, so that the test
    # neither needs nor touches the machine's /mnt. Everything else runs exactly as written.
    origins = tour()
    lines = [line.replace("/mnt/", f"{mnt_root}/") for line in origins]
    assert any(str(mnt_root) in line for line in lines), "the tour mounts under /mnt"
    t = Tour(lines, tmp_path, origins)
    env = tour_env(tmp_path)
    t.run(env)

    scratch = t.scratch
    assert scratch is not None and scratch.parent == tmp_path / "tmp", "the tour works in a mktemp -d folder"
    assert "6 added" in t.out("fsmount sync --folder ./pets --project cv --name pets")
    draft = t.out("fsmount create --project cv --name pets --parent cv/pets").split()[-1]
    assert HEX_ID.fullmatch(draft), "create prints the new draft's id"

    info = t.out("fsmount info cv/pets")
    removed = info[info.index("removed:") :]
    assert "images/bad_01.jpg" in removed and "images/bad_02.jpg" in removed
    assert "images/img_04.jpg" in info[info.index("added:") : info.index("modified:")]
    listed = [line.split()[-1] for line in t.out("fsmount ls cv/pets images -l").splitlines() if line.strip()]
    assert listed == [f"images/img_0{i}.jpg" for i in (1, 2, 3, 4)]
    diff = t.out("fsmount diff cv/pets@1.0.0 cv/pets").splitlines()
    assert {"R images/bad_01.jpg", "R images/bad_02.jpg", "A images/img_04.jpg"} <= set(diff)
    assert "verified" in t.out("fsmount verify cv/pets")

    # README: the cache is ~/.cache/fsmount (here $XDG_CACHE_HOME/fsmount), the store ~/.local/share/...
    copy = Path(t.out("fsmount get cv/pets").splitlines()[-1])
    assert copy.is_relative_to(isolated_env / "cache" / "fsmount")
    assert (copy / "images/img_04.jpg").read_bytes() == (scratch / "new_images/img_04.jpg").read_bytes()
    assert (isolated_env / "data" / "fsmount" / "store").is_dir()
    assert (scratch / "work/labels.csv").read_text() == "img_01.jpg,dog\n", "get --copy ./work"
    assert not (scratch / "work/images/bad_01.jpg").exists()

    tree = t.out(f"ls -R {mnt_root}/pets")
    assert "img_04.jpg" in tree and "labels.csv" in tree and "bad_01.jpg" not in tree
    status = t.out("fsmount status")
    assert f"{mnt_root}/pets" in status and "cv/pets@1.0.1" in status

    pending = set(t.out(f"fsmount diff {mnt_root}/work").splitlines())
    assert {"A images/img_05.jpg", "M labels.csv", "R images/img_03.jpg"} <= pending
    child = t.out(f'fsmount commit {mnt_root}/work -m "fix labels"').split()[-1]
    assert HEX_ID.fullmatch(child), "commit prints the new version's id"
    assert "discarded 1" in t.out(f"fsmount discard {mnt_root}/work --yes")
    assert t.out(f"cat {mnt_root}/work/labels.csv") == "img_01.jpg,dog\nimg_04.jpg,cat\n", "the committed fix"

    warmed = t.out("fsmount warm cv/pets images")
    assert "fetched" in warmed or "cached" in warmed, warmed
    part0 = {str(p.relative_to(scratch / "part0")) for p in (scratch / "part0").rglob("*") if p.is_file()}
    now = {str(p.relative_to(scratch / "now")) for p in (scratch / "now").rglob("*") if p.is_file()}
    assert part0 and part0 < now, "part 0 of 2: some of the version's files, not all"
    assert "equal to" in t.out("fsmount get cv/pets --copy ./now && fsmount verify cv/pets --folder ./now")
    assert "cv/pets" in t.out("fsmount search --project cv --name 'pe.s'")
    flat = json.loads(fsmount(env, "info", "flat/pets", "--json"))
    # the merge of 1.0.1 and 1.0.2, later winning: 1.0.2's files, and img_03 that only 1.0.1 has
    assert flat["parents"] == [] and flat["files"] == len(now | {"images/img_03.jpg"}) == 6

    # What the tour leaves: no mount, the versions it describes, the REF forms it names.
    assert not any(os.path.ismount(d) for d in mnt_root.iterdir()), "the tour unmounts what it mounted"
    assert json.loads(fsmount(env, "status", "--json"))["mounts"] == []
    listing = json.loads(fsmount(env, "list", "--project", "cv", "--json"))["datasets"]
    versions = {d["version"]: d for d in listing}
    assert sorted(versions) == ["1.0.1", "1.0.2"], "1.0.0 was deleted"
    v2 = versions["1.0.1"]
    assert (v2["id"], v2["state"], v2["tags"]) == (draft, "published", ["best"])
    committed = json.loads(fsmount(env, "info", child[:8], "--json"))  # a unique id prefix is a REF
    assert (committed["id"], committed["parents"], committed["message"]) == (child, [draft], "fix labels")
    assert committed["removed"] == ["images/img_03.jpg"] and committed["added"] == ["images/img_05.jpg"]
    assert json.loads(fsmount(env, "info", "tag:best", "--json"))["id"] == draft


# ---------------------------------------------------------------- the Python block


def test_the_python_block_runs_as_written(tmp_path: Path) -> None:
    """README: run in the tour's scratch folder right after its `fsmount sync` (no mount needed)."""
    lines = tour()
    upto = next(i for i, line in enumerate(lines) if line.startswith("fsmount sync ")) + 1
    t = Tour(lines[:upto], tmp_path)
    env = tour_env(tmp_path)
    t.run(env)
    assert t.scratch is not None
    code = fenced_block(section("Python"), "python")
    python = str(VENV_BIN / "python")
    proc = subprocess.run([python, "-c", code], cwd=t.scratch, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    v1 = json.loads(fsmount(env, "info", "cv/pets@1.0.0", "--json"))
    v2 = json.loads(fsmount(env, "info", "cv/pets", "--json"))
    assert proc.stdout.split()[0] == v2["id"] and v2["parents"] == [v1["id"]]
    assert "['images/img_04.jpg']" in proc.stdout, "print(v.list_added_files())"
    assert v2["removed"] == ["images/bad_01.jpg", "images/bad_02.jpg"]


# ---------------------------------------------------------------- "Two commands" and the store table


def make_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:=\s*(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert m, f"Makefile sets no {name}"
    return m.group(1).strip()


def test_two_commands_are_the_readme_block() -> None:
    blocks = indented_blocks(section("Two commands"))
    assert [without_comment(line) for line in commands(blocks[0])] == ["make demo", "make test"]


@pytest.mark.parametrize("target", ["demo", "test"])
def test_two_commands_parse(target: str) -> None:
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    proc = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_two_commands_name_what_they_install() -> None:
    text = " ".join(section("Two commands").split())
    m = re.search(r"system packages they need \(`([^`]*)`", text)
    assert m, "README names the system packages"
    assert m.group(1).split() == make_var("APT_PACKAGES").split()
    assert f"`{make_var('VENV')}/`" in text and f"`{make_var('VENV')}/bin/fsmount`" in text


def test_store_and_cache_table(tmp_path: Path) -> None:
    rows = [r for r in section("Choosing a store and a cache").splitlines() if r.startswith("| ")][2:]
    options = [re.search(r"`(--[\w-]+)", r).group(1) for r in rows]  # type: ignore[union-attr]
    assert options == ["--store", "--endpoint-url", "--cache-dir", "--cache-size"]
    env = tour_env(tmp_path)
    helptext = fsmount(env, "--help")
    assert all(o in helptext for o in options)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.txt").write_text("a\n")
    env |= {"FSMOUNT_STORE": f"file://{tmp_path}/store", "FSMOUNT_CACHE_DIR": str(tmp_path / "cache")}
    sync = ["sync", "--folder", str(tmp_path / "data"), "--project", "p", "--name", "n", "-q"]
    fsmount(env, *sync)
    assert (tmp_path / "store/state").is_dir(), "FSMOUNT_STORE"
    copy = Path(fsmount(env, "get", "p/n", "-q").strip())
    assert copy.is_relative_to(tmp_path / "cache"), "FSMOUNT_CACHE_DIR"
    fsmount(env, "--store", f"file://{tmp_path}/other", *sync)
    assert (tmp_path / "other/state").is_dir(), "--store wins over FSMOUNT_STORE"


def test_paths_the_readme_names_exist() -> None:
    named = set(re.findall(r"\b((?:systemd|docs|scripts|tests)/[\w@.-]+\.\w+)", README.read_text()))
    assert named, "README names repository files"
    assert sorted(p for p in named if not (REPO / p).exists()) == []


# ---------------------------------------------------------------- "Running as a service" (syntax only)
# systemctl, journalctl, make install and mount(8) need a real system service manager and /etc:
# they are not run here. The conf file and the fstab line are checked by the parsers that read them.


def service_conf(tmp_path: Path) -> Path:
    text = section("Running as a service")
    m = re.search(r"^    cat > (\S+) <<'?EOF'?\n(.*?)^    EOF$", text, re.S | re.M)
    assert m, "the service section writes a conf file with a here-document"
    conf = tmp_path / Path(m.group(1)).name
    conf.write_text("\n".join(line[4:] for line in m.group(2).splitlines()) + "\n")
    return conf


def test_service_conf_sample_parses(tmp_path: Path) -> None:
    s = parse_conf(service_conf(tmp_path))
    assert (s.ref, s.mountpoint, s.store) == ("cv/pets@1.2.0", "/mnt/pets", "s3://ml-datasets/prod")
    assert s.cache_size in ("50GiB", 50 * 2**30) and s.allow_other is True
    assert s.metrics_file == "/var/lib/node_exporter/fsmount-pets.prom"


def test_service_conf_sample_values_are_as_written(tmp_path: Path) -> None:
    assert parse_conf(service_conf(tmp_path)).credentials_file == "/etc/fsmount/pets.credentials"


def test_fstab_line_parses() -> None:
    text = section("Running as a service")
    lines = [line.strip() for block in indented_blocks(text) for line in block if "fuse.fsmount" in line]
    assert len(lines) == 1, "one fstab line"
    source, mountpoint, fstype, options, dump, passno = lines[0].split()
    assert (fstype, dump, passno) == ("fuse.fsmount", "0", "0")
    s = parse_fstab_options(source, mountpoint, options)
    assert (s.ref, s.mountpoint, s.store) == ("cv/pets@1.2.0", "/mnt/pets", "s3://ml-datasets/prod")
    assert s.cache_size in ("50GiB", 50 * 2**30) and s.allow_other is True and s.write is False
