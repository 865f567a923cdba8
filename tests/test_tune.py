"""The config sweep tool (m3kernels.benchmarks.tune): checks before timing, reports mismatches and compile
errors, restores the tables, and runs every sweep end to end on tiny shapes (interpreter here, real on GPU)."""

import json

import pytest
import torch

from m3kernels.attention import triton as attention_triton
from m3kernels.benchmarks import tune
from m3kernels.maxsim import triton as maxsim_triton
from m3kernels.sparse import triton as sparse_triton


def _sweep(state: dict, candidates: list[tuple]) -> tune.Sweep:
    def run():
        if state["v"] == 3:
            raise RuntimeError("out of resources: shared memory")
        return torch.tensor([1.0, 5.0]) * (2.0 if state["v"] == 2 else 1.0)

    return tune.Sweep("toy", "table", candidates, lambda cfg: tune.swap(state, "v", cfg[0]),
                      [tune.Shape("x", run, bytes=8.0)])


def test_run_sweep_checks_each_candidate_against_the_table_entry():
    state = {"v": 0}
    rows = tune.run_sweep(_sweep(state, [(1,), (2,), (3,), (4,)]), torch.device("cpu"), float("inf"), 1.0)
    status = {r.config: r.status for r in rows}
    assert status["(1,)"] == "ok" and status["(4,)"] == "ok"
    assert status["(2,)"].startswith("mismatch")
    assert status["(3,)"].startswith("error: RuntimeError: out of resources")
    assert [r.is_table_entry for r in rows] == [True, False, False, False]
    assert rows[0].ms is not None and rows[0].gbps is not None and rows[1].ms is None
    assert state["v"] == 0  # restored after every candidate, errors included
    text = tune.report(rows)
    assert "<- table" in text and "mismatch" in text


def test_run_sweep_skips_past_the_deadline():
    rows = tune.run_sweep(_sweep({"v": 0}, [(1,), (4,)]), torch.device("cpu"), 0.0, 1.0)
    assert {r.status for r in rows} == {"skipped (budget)"}


def test_swap_restores_on_error():
    table = {"k": 1}
    with pytest.raises(ValueError), tune.swap(table, "k", 2):
        assert table["k"] == 2
        raise ValueError
    assert table == {"k": 1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="tiny shapes are for the interpreter")
def test_every_sweep_runs_on_tiny_shapes(tmp_path, capsys):
    def tables():
        return (dict(maxsim_triton._FWD_CONFIGS), dict(maxsim_triton._BWD_TILES), dict(attention_triton.CONFIGS),
                sparse_triton._POOL_BLOCK_T, sparse_triton._POOL_MAX_BLOCK_H, dict(sparse_triton._POOL_SORT_WARPS))

    before = tables()
    assert tune.main(["--out", str(tmp_path), "--small", "--limit", "2"]) == 0
    rows = json.loads((tmp_path / "tune.json").read_text())["rows"]
    shapes = {(r["sweep"], r["shape"]) for r in rows}
    assert len(shapes) == 7 and len(rows) == 14
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in rows), rows
    assert sum(r["is_table_entry"] for r in rows) == 7
    assert tables() == before
    assert "<- table" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_full_size_sweep_needs_a_gpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tune.main(["--out", str(tmp_path)])
    assert exc.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err


def test_candidates_put_the_entry_first_and_near_configs_before_far_ones():
    grid = iter([(9, 9), (1, 9), (1, 2), (2, 2)])
    assert tune._candidates((1, 2), grid, None, first=(("other kernel",),)) == [
        (1, 2), ("other kernel",), (1, 9), (2, 2), (9, 9)]
    assert tune._candidates((1, 2), iter([(1, 3), (5, 5)]), 2) == [(1, 2), (1, 3)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the CPU (--small) path")
def test_a_sweep_that_cannot_build_its_inputs_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    def broken(device, small, limit):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tune, "SWEEPS", (broken, lambda device, small, limit: _sweep({"v": 0}, [(1,), (4,)])))
    assert tune.main(["--out", str(tmp_path), "--small"]) == 0
    assert "broken: could not build its inputs: OutOfMemoryError" in capsys.readouterr().out
    rows = json.loads((tmp_path / "tune.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]


def test_ncu_rerank_launches_of_triton_and_cuda_tiles_agree():
    """The launches bench/gpu_check.sh profiles with Nsight Compute: Triton's rerank forward and the CUDA tiles
    (where the CUDA kernels are built, e.g. on the host emulation) compute the same scores."""
    from m3kernels.benchmarks import ncu_rerank

    runs = ncu_rerank.launches(["0", "15", "t20"], torch.device("cpu"), small=True)
    scores = [run()[0] for _, run in runs]
    assert [label for label, _ in runs][1:] in ([], ["cuda tile 0", "cuda tile 15", "cuda tile 20 as token tiles"])
    assert runs[0][0] == "triton" and scores[0].shape == (1, 5) and torch.isfinite(scores[0]).all()
    for (label, _), got in zip(runs[1:], scores[1:], strict=True):
        torch.testing.assert_close(got, scores[0], rtol=1e-3, atol=1e-3, msg=label)


def test_cuda_rerank_sweep_times_both_layouts():
    """The CUDA rerank sweep's candidates: the table entry, the first token tiles, then the rest; every candidate
    gives the entry's scores (on the host emulation in CI) and the tables are restored."""
    from m3kernels import _backend

    if _backend.cuda_kernels_unavailable(torch.device("cpu")) is not None:
        pytest.skip("needs the CUDA kernels (the host emulation's build in CI)")
    from m3kernels.maxsim import cuda as maxsim_cuda

    sweep = tune.maxsim_cuda_sweep(torch.device("cpu"), small=True, limit=None)
    first = [("tokens", t) for t in tune._FIRST_TOKEN_TILES]
    assert sweep.candidates[: 1 + len(first)] == [("pairs", maxsim_cuda._FWD_TILE), *first]
    assert ("pairs", 9) not in sweep.candidates and ("tokens", 9) in sweep.candidates  # 128 query rows: tokens only
    sweep.candidates = [*sweep.candidates[:3], ("pairs", 15)]
    rows = tune.run_sweep(sweep, torch.device("cpu"), float("inf"), 1.0)
    assert [r.status for r in rows] == ["ok"] * 4, rows
    assert (maxsim_cuda._FWD_TILE, maxsim_cuda._TOKENS_TILE) == (0, None)
