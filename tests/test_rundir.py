import json

from protege.rundir import RunDir, hash_config, invalidate, is_fresh, sha256_path, write_manifest


def test_manifest_freshness_tracks_config_and_inputs(tmp_path):
    rd = RunDir(tmp_path / "run")
    inp = tmp_path / "in.jsonl"
    inp.write_text("a\n")
    out = rd.questions
    out.parent.mkdir(parents=True)
    out.write_text("b\n")
    assert not is_fresh(rd, "curate", "h1", [inp])
    m = write_manifest(
        rd, "curate", config_hash="h1", inputs=[inp], outputs=[out], counts={"n": 1}, seconds=0.5
    )
    assert json.loads(rd.manifest("curate").read_text()) == m
    assert m["outputs"] == {"01-curate/questions.jsonl": sha256_path(out)}
    assert is_fresh(rd, "curate", "h1", [inp])
    assert not is_fresh(rd, "curate", "h2", [inp])  # config changed
    inp.write_text("changed\n")
    assert not is_fresh(rd, "curate", "h1", [inp])  # input changed
    inp.write_text("a\n")
    out.unlink()
    assert not is_fresh(rd, "curate", "h1", [inp])  # output gone
    invalidate(rd, "curate")
    assert not rd.manifest("curate").exists()


def test_directory_hash_sees_names_and_contents(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h = sha256_path(d)
    (d / "a").write_text("2")
    assert sha256_path(d) != h
    (d / "a").write_text("1")
    assert sha256_path(d) == h
    (d / "a").rename(d / "b")
    assert sha256_path(d) != h


def test_hash_config_is_order_independent():
    assert hash_config({"a": 1, "b": 2}) == hash_config({"b": 2, "a": 1})
