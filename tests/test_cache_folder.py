"""Issue 13, item 4: the feature cache lives where the user says (--cache-dir, CNNCLI_CACHE_DIR, the
platform's cache folder), never where a bundle says, and stays under its size cap."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.files.cache import cache_folder, default_folder, prune

runner = CliRunner()
AUDIO_BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "audio"
RECORDINGS = sorted((REPO / "sample_data" / "audio").glob("*.wav"))[:3]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.npy")) if folder.exists() else []


def test_a_bundle_cannot_choose_where_predict_and_eval_write(tmp_path, user_cache):
    bundle = tmp_path / "bundle"
    shutil.copytree(AUDIO_BUNDLE, bundle)
    chosen = tmp_path / "chosen-by-the-bundle"
    info = json.loads((bundle / "model.json").read_text())
    info["modality"]["state"]["options"]["cache"] = str(chosen)
    info["recipe"]["data"]["audio"]["cache"] = str(chosen)
    (bundle / "model.json").write_text(json.dumps(info))
    assert cli("predict", bundle, *RECORDINGS).exit_code == 0
    assert cli("eval", bundle, *RECORDINGS).exit_code in (0, 2)  # labels may be unknown: either way, no write
    assert not chosen.exists()
    assert len(entries(user_cache / "audio")) >= 3  # CNNCLI_CACHE_DIR (set for every test)


def test_cache_dir_and_no_cache_choose_the_folder_or_none(tmp_path, user_cache):
    before = entries(user_cache)
    mine = tmp_path / "mine"
    assert cli("predict", AUDIO_BUNDLE, *RECORDINGS, "--cache-dir", mine).exit_code == 0
    assert len(entries(mine / "audio")) == 3
    shutil.rmtree(mine)
    assert cli("predict", AUDIO_BUNDLE, *RECORDINGS, "--cache-dir", mine, "--no-cache").exit_code == 0
    assert cli("eval", AUDIO_BUNDLE, "--no-cache").exit_code == 0
    assert not mine.exists() and entries(user_cache) == before


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNCLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_folder() == tmp_path / "xdg" / "cnncli"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_folder() == tmp_path / "home" / ".cache" / "cnncli"
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(tmp_path / "env"))
    assert cache_folder() == tmp_path / "env" and cache_folder(tmp_path / "flag") == tmp_path / "flag"
    assert cache_folder(tmp_path / "flag", enabled=False) is None


def test_pruning_deletes_the_least_recently_used_entries_and_nothing_else(tmp_path):
    root = tmp_path / "cache"
    paths = []
    for age, letter in enumerate("abcd"):
        key = letter * 64
        path = root / "audio" / key[:2] / f"{key}.npy"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1_000_000 + age, 1_000_000 + age))  # a is the oldest
        paths.append(path)
    precious = root / "audio" / "notes.txt"
    precious.write_text("not an entry")
    stale = root / "audio" / "dd" / f".{'d' * 64}.npy.tmp-1-abcd"
    stale.write_bytes(b"half")
    os.utime(stale, (1_000_000, 1_000_000))
    assert prune(root, 2500) == 2
    assert [path.exists() for path in paths] == [False, False, True, True]
    assert precious.exists() and not stale.exists()


def test_a_cache_over_its_cap_prunes_itself_when_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCLI_CACHE_MAX_MB", "0")
    folder = tmp_path / "capped"
    assert cli("predict", AUDIO_BUNDLE, *RECORDINGS, "--cache-dir", folder).exit_code == 0
    assert len(entries(folder)) <= 1  # pruned at the first write of the process, whatever followed


def test_a_bad_cap_is_refused_before_any_work(monkeypatch):
    monkeypatch.setenv("CNNCLI_CACHE_MAX_MB", "lots")
    result = cli("predict", AUDIO_BUNDLE, *RECORDINGS)
    assert result.exit_code == 2 and "CNNCLI_CACHE_MAX_MB='lots'" in result.stderr
