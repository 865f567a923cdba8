"""`m3k info` and the benchmark harness (status of every provider, table and files)."""

import json

import pytest
import torch

from m3kernels import cli
from m3kernels.benchmarks import attention as bench_attention
from m3kernels.benchmarks import maxsim as bench_maxsim
from m3kernels.benchmarks import report
from m3kernels.benchmarks import sparse as bench_sparse
from m3kernels.benchmarks.harness import Case, Provider, run_case


def test_info_lists_every_op_and_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for op in ("maxsim", "lexical_weights", "lexical_scores", "attention_varlen"):
        assert op in out
    assert "m3kernels._C" in out


def test_unknown_command_fails():
    assert cli.main(["frobnicate"]) == 2


def _boom():
    raise RuntimeError("peer crashed")


def test_run_case_checks_before_timing(tmp_path):
    x = torch.randn(64, 64)
    truth = x @ x
    case = Case(
        "matmul", "64x64",
        [Provider("good", lambda: x @ x, is_reference=True), Provider("wrong", lambda: x @ x + 1),
         Provider("crash", _boom), Provider("absent", None, "not installed"),
         Provider("floor", lambda: x.sum(), floor="a bound: its output is not the op's")],
        check=lambda out: (out - truth).abs().max().item(), tolerance=1e-3, flops=2 * 64**3,
    )
    rows = {r.provider: r for r in run_case(case, torch.device("cpu"), repeats=3, ceilings={"gflops": 1.0,
                                                                                          "gbps": 1.0})}
    assert rows["good"].status == "ok" and rows["good"].median_ms > 0 and rows["good"].speedup_vs_reference == 1
    assert rows["wrong"].status == "wrong" and rows["wrong"].median_ms is None
    assert rows["crash"].status == "error" and "peer crashed" in rows["crash"].note
    assert rows["absent"].status == "unavailable" and rows["absent"].note == "not installed"
    assert rows["floor"].status == "ok" and rows["floor"].median_ms > 0 and "a bound" in rows["floor"].note
    paths = report.write(list(rows.values()), {"device": "cpu"}, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["rows"]) == 5 and (tmp_path / "results.csv").exists() and paths
    assert "peer crashed" in report.table(list(rows.values()))


@pytest.mark.parametrize(
    "make",
    [
        lambda dev: bench_maxsim.rerank_case(dev, 16, 20, (1, 40), torch.float32),
        lambda dev: bench_maxsim.train_case(dev, 8, torch.float32),
        lambda dev: bench_maxsim.rerank_case(dev, 16, 20, (1, 40), torch.float16),  # + the fp16 einsum peer
        lambda dev: bench_maxsim.train_case(dev, 8, torch.bfloat16),  # + the bf16 einsum peer
        lambda dev: bench_sparse.weights_case(dev, 3, 17, 8, torch.float32),
        lambda dev: bench_sparse.kernels_case(dev, 3, 17, 8, torch.float32),
        lambda dev: bench_sparse.scores_case(dev, 3, 10),
        lambda dev: bench_attention.case(dev, [5, 1, 9], torch.float32, "tiny"),
        lambda dev: bench_attention.backward_case(dev, [5, 1, 9], torch.float32, "tiny"),
    ],
)
def test_small_benchmark_cases_agree(make):
    """Every in-process provider of each suite agrees with the float64 truth on a small shape."""
    rows = run_case(make(torch.device("cpu")), torch.device("cpu"), repeats=1, ceilings={"gflops": 1.0, "gbps": 1.0})
    statuses = {r.provider: r.status for r in rows}
    assert "m3k:cpu" in statuses
    assert all(s in ("ok", "unavailable") for s in statuses.values()), statuses


def test_a_provider_failing_while_timed_leaves_the_others():
    calls = []

    def fails_later():
        calls.append(1)
        if len(calls) > 1:
            raise torch.OutOfMemoryError("out of memory on the second call")
        return torch.ones(3)

    case = Case("op", "3", [Provider("good", lambda: torch.ones(3), is_reference=True), Provider("late", fails_later)],
                check=lambda out: (out - 1).abs().max().item(), tolerance=0.0)
    rows = {r.provider: r for r in run_case(case, torch.device("cpu"), repeats=3, ceilings={"gflops": 1.0,
                                                                                          "gbps": 1.0})}
    assert rows["good"].status == "ok" and rows["good"].median_ms is not None
    assert rows["late"].status == "error" and "while timing" in rows["late"].note and rows["late"].median_ms is None


@pytest.mark.parametrize(("rows", "skipped"), [(2**21 - 1, False), (2**21, True)])  # x 1024 = 2^31
def test_int32_peer_is_skipped_on_docs_of_2_31_elements(monkeypatch, rows, skipped):
    """late-interaction-kernels indexes the docs in int32: on the H200 it read out of bounds at the rerank shape and
    the illegal address failed every later provider of the process, so it must not run from 2^31 elements on."""
    called = []
    peer = type("Peer", (), {"maxsim_varlen": staticmethod(lambda *a: called.append(1)),
                             "flash_maxsim": staticmethod(lambda *a, **k: None)})
    monkeypatch.setattr(bench_maxsim, "import_peer", lambda name: (peer, None))
    d = torch.zeros(1, 1024, dtype=torch.float16).expand(rows, 1024)  # 2^31 elements without the memory
    cu = torch.tensor([0, rows], dtype=torch.int32)
    by_name = {p.name: p for p in bench_maxsim._gpu_peers(torch.zeros(32, 1024), cu.new_tensor([0, 32]), d, cu)}
    lik = by_name["late-interaction-kernels maxsim_varlen"]
    if skipped:
        assert lik.fn is None and "int32" in lik.unavailable
    else:
        lik.fn()
        assert called == [1]


def test_peers_can_be_switched_off(monkeypatch):
    """gpu_check.sh reruns the bench with M3K_BENCH_PEERS=0 after a peer broke the CUDA context."""
    from m3kernels.benchmarks.common import import_peer
    monkeypatch.delenv("M3K_BENCH_PEERS", raising=False)
    assert import_peer("json")[0] is not None
    monkeypatch.setenv("M3K_BENCH_PEERS", "0")
    module, why = import_peer("json")
    assert module is None and "M3K_BENCH_PEERS=0" in why


def test_bench_keeps_rows_of_finished_cases(tmp_path, monkeypatch):
    """A suite that fails, or a run interrupted by a time limit's SIGINT, keeps the rows measured so far in
    results.json (rewritten after every case)."""
    from m3kernels.benchmarks import roofline, run

    def suite_cases(fail):
        def cases(device, quick):
            yield Case("first", "1", [Provider("p", lambda: torch.ones(1), is_reference=True)],
                       check=lambda out: 0.0, tolerance=0.0)
            raise fail
        return type("Suite", (), {"cases": staticmethod(cases)})

    monkeypatch.setattr(roofline, "measure", lambda device, quick: {"gflops": 1.0, "gbps": 1.0})
    monkeypatch.setattr(run, "SUITES", {"a": suite_cases(RuntimeError("case build failed")),
                                        "b": suite_cases(KeyboardInterrupt())})
    assert run.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 130
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["op"], r["status"]) for r in rows] == [("first", "ok"), ("a", "error"), ("first", "ok")]
    assert "case build failed" in rows[1]["note"]


def test_bench_device_is_checked_and_made_current(monkeypatch, capsys, tmp_path):
    """--device names an existing device (a clear usage error otherwise); cuda:N becomes the current device, so
    that the harness's CUDA events and syncs time that device."""
    from m3kernels.benchmarks import run

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert run._bench_device("cuda:1") == torch.device("cuda:1") and current == [torch.device("cuda:1")]
    assert run._bench_device("cuda") == torch.device("cuda") and len(current) == 1
    for bad, why in [("cuda:2", "only 2 CUDA device"), ("tpu", "--device"), ("meta", "expected cpu, cuda")]:
        with pytest.raises(SystemExit):
            run.main(["--device", bad, "--out", "unused"])
        assert why in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        run.main(["--device", "cuda"])
    assert "has no CUDA device" in capsys.readouterr().err
    for repeats in ("0", "-1"):  # -1 used to run every suite on no samples and exit 0
        with pytest.raises(SystemExit):
            run.main(["--device", "cpu", "--repeats", repeats, "--out", str(tmp_path)])
        assert "--repeats must be >= 1" in capsys.readouterr().err


def test_encode_suite_reports_both_sides(monkeypatch):
    """The end-to-end suite measures our encode in a subprocess; without the FlagEmbedding venv that side is
    listed as unavailable with the reason."""
    from m3kernels.benchmarks import encode

    monkeypatch.delenv("M3K_FLAG_PYTHON", raising=False)
    real_measure, devices = encode.measure, []
    monkeypatch.setattr(encode, "measure", lambda *a: devices.append(a[5]) or real_measure(*a))
    rows = encode.rows(torch.device("cpu"), quick=True)
    assert devices == ["cpu"]
    missing = torch.device("cuda", max(1, torch.cuda.device_count()))
    with pytest.raises(RuntimeError):  # the device as given (cuda:N), which the workers make current
        encode.rows(missing, quick=True)
    assert devices[-1] == str(missing)
    ours, flag = rows
    assert ours.status == "ok" and ours.achieved > 0 and ours.achieved_unit == "tok/s"
    assert flag.status == "unavailable" and "M3K_FLAG_PYTHON" in flag.note


def test_gpu_targets_summary(tmp_path, capsys):
    """The GPU target summary reads results.json rows: met, missed, comparisons and missing rows are told apart."""
    from m3kernels.benchmarks import targets

    rerank = targets.RERANK
    rows = [
        {"op": "maxsim", "shape": rerank, "provider": "m3k:triton", "status": "ok", "median_ms": 2.0,
         "pct_of_ceiling": 85.0, "speedup_vs_reference": 4.0, "achieved": 2500.0, "achieved_unit": "GB/s",
         "peak_extra_mib": 0.1},
        {"op": "maxsim", "shape": rerank, "provider": "m3k:cuda", "status": "ok", "median_ms": 2.4,
         "pct_of_ceiling": 71.0, "speedup_vs_reference": 3.3, "achieved": 2100.0, "achieved_unit": "GB/s",
         "peak_extra_mib": 20.0},
        {"op": "maxsim", "shape": rerank, "provider": "padded einsum+max as FlagEmbedding/PyLate run it, in float16",
         "status": "ok", "median_ms": 4.0},
        {"op": "maxsim fwd+bwd", "shape": targets.ALL_PAIRS, "provider": "m3k:triton deterministic", "status": "ok",
         "median_ms": 2.0, "speedup_vs_reference": 3.5},
        {"op": "lexical_weights", "shape": "B=64 L=512 H=1024 vocab=250002 float16", "provider": "m3k:triton",
         "status": "error", "note": "RuntimeError: boom"},
        {"op": "maxsim", "shape": rerank, "provider": "m3k:triton, CUDA graph replay", "status": "ok",
         "median_ms": 1.4, "pct_of_ceiling": 102.0, "achieved": 4100.0, "achieved_unit": "GB/s"},
        {"op": "maxsim", "shape": rerank, "provider": "m3k:triton, data checks off (trusted_inputs)", "status": "ok",
         "median_ms": 1.6, "pct_of_ceiling": 90.0, "achieved": 3600.0, "achieved_unit": "GB/s"},
        {"op": "lexical_weights kernels", "shape": "B=64 L=512 H=1024 float16", "status": "ok",
         "provider": "torch sum of the hidden states", "median_ms": 0.025, "pct_of_ceiling": 65.0,
         "achieved": 2684.0, "achieved_unit": "GB/s"},
        {"op": "lexical_weights kernels", "shape": "B=64 L=512 H=1024 float16", "status": "ok",
         "provider": "m3k:triton", "median_ms": 0.030, "pct_of_ceiling": 56.0, "achieved": 2237.0,
         "achieved_unit": "GB/s"},
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"machine": {"gpu": "Test GPU"}, "rows": rows}))
    encode = tmp_path / "encode.json"
    encode.write_text(json.dumps({"speedup": 2.5}))
    assert targets.main([str(results), str(encode)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = {name: text for text in out for name in [text[7:].split(":")[0]]}
    assert line["MaxSim rerank >= 80% copy bandwidth (triton)"].startswith("MET")
    assert line["MaxSim rerank >= 5x padded einsum reference (triton)"].startswith("MISSED")
    assert line["MaxSim rerank cuda within 10% of triton"].startswith("MISSED")  # 2.4 ms vs 2.0 ms
    assert "error: RuntimeError" in line["sparse weights B=64 >= 70% copy bandwidth (triton, end to end)"]
    assert line["attention 8192 tokens >= SDPA flash TFLOP/s"].startswith("-")
    assert line["encode fp16 real size >= 2x FlagEmbedding"].startswith("MET")
    graph = line["MaxSim rerank, triton, CUDA graph replay"]
    assert graph.startswith("info ") and graph.endswith("replay: 1.400 ms, 4100 GB/s (102% of ceiling)")
    assert line["MaxSim rerank, triton, data checks off"].endswith("off: 1.600 ms, 3600 GB/s (90% of ceiling)")
    assert line["MaxSim rerank peak extra memory O(Nq*Nd) (triton)"].startswith("MET")  # 0.1 MiB
    assert line["MaxSim rerank peak extra memory O(Nq*Nd) (cuda)"] == (
        "info   MaxSim rerank peak extra memory O(Nq*Nd) (cuda): 20.0 MiB (bound 1.6 MiB) (exceeds the bound)")
    peer = line["MaxSim rerank vs the einsum in fp16, as the peers run it (triton)"]
    assert peer == ("info   MaxSim rerank vs the einsum in fp16, as the peers run it (triton): 2.000 vs 4.000 ms "
                    "(below the goal)")
    sparse_kernel = line["sparse weights kernels >= 70% copy bandwidth (triton, one kernel, device time)"]
    assert sparse_kernel.startswith("info   ") and "56% of ceiling" in sparse_kernel
    assert not any(text.startswith(("MET", "MISSED")) for text in out if "deterministic" in text)
    assert "attention 8192 tokens, triton, CUDA graph replay" not in line  # no row: nothing printed
    assert line["sparse read floor, a torch sum of the same 64 MiB"].endswith("(65% of ceiling)")
    assert out[0] == "targets (Test GPU):"



def test_gpu_targets_read_the_sweep(tmp_path, capsys):
    """With --tune, the summary sets the sweep's fastest CUDA rerank tile beside the Triton table entry."""
    from m3kernels.benchmarks import targets
    from m3kernels.benchmarks.tune import CUDA_RERANK_SWEEP, TRITON_RERANK_SWEEP

    shape = "rerank Nq=1 Lq=32 Nd=10000 Ld=U[64,512] H=1024 fp16"

    def row(sweep, config, entry, ms, pct, status="ok"):
        return {"sweep": sweep, "shape": shape, "config": config, "is_table_entry": entry, "status": status,
                "ms": ms, "pct_copy_bw": pct}

    tune = {"rows": [row(CUDA_RERANK_SWEEP, "('pairs', 0)", True, 1.9, 73.0),
                     row(CUDA_RERANK_SWEEP, "('tokens', 15)", False, 1.45, 95.0),
                     row(CUDA_RERANK_SWEEP, "('pairs', 7)", False, 0.1, 0.0, status="wrong"),
                     row(TRITON_RERANK_SWEEP, "(64, 128, 4, 3)", True, 1.35, 102.0),
                     row(TRITON_RERANK_SWEEP, "(32, 128, 4, 3)", False, 1.2, 110.0)]}
    (tmp_path / "tune.json").write_text(json.dumps(tune))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"machine": {"gpu": "Test GPU"}, "rows": []}))
    assert targets.main([str(results), "--tune", str(tmp_path / "tune.json")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == ("info   MaxSim rerank, kernels alone in this run's sweep: best CUDA (layout, tile) ('tokens', 15) "
                    "1.450 ms, "
                    "95% of copy, vs triton's entry 1.350 ms (within 10%; reaches 80% of copy)")
    assert targets.sweep_lines({"rows": tune["rows"][:3]})[0].endswith("not in tune.json")

def test_profile_splits_a_call(tmp_path, capsys):
    from m3kernels.benchmarks import profile

    out = tmp_path / "profile.txt"
    assert profile.main(["--ops", "lexical_weights", "--rows", "3", "--out", str(out)]) == 0
    summary = out.read_text().split("== summary")[1].strip().splitlines()[1:]
    assert len(summary) == 1 and summary[0].startswith("lexical_weights | B=32")
    for field in ("call", "trusted", "host"):
        assert float(summary[0].split(f"| {field} ")[1].split(" ms")[0]) > 0
    assert "Self CPU" in capsys.readouterr().out
