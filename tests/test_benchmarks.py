"""Smoke runs of the benchmarks on tiny components: they run end to end and print their tables (never timings)."""

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(os.path.dirname(HERE), "benchmarks")


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"normalcrafter_benchmarks_{name}", os.path.join(BENCHMARKS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_vs_reference_smoke_prints_the_side_by_side_table(capsys):
    bench = load_benchmark("bench_vs_reference.py")
    argv = ["--tiny", "--frames", "16", "--height", "64", "--width", "64", "--dtypes", "fp32", "--repeats", "1"]
    variants = ["reference", "ours", "ours-enc14", "ours-cl"]
    rows = bench.main(argv + ["--variants", *variants, "--matmul-size", "256"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:8] == [
        "dtype",
        "variant",
        "s/frame",
        "ref/this",
        "angle vs ref max/median (deg)",
        "vs ours max/median (deg)",
        "load peak GB",
        "run peak GB",
    ]
    assert [cell.split(" s/frame")[0] for cell in header[8:]] == ["clip", "vae_encode", "unet", "vae_decode"]
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert [cells[:2] for cells in body] == [["fp32", variant] for variant in variants]
    assert all(len(cells) == len(header) for cells in body)
    assert rows[0]["angle_vs_reference"][0] < 1e-4  # the reference against itself: arccos rounding only
    # The FLOP counts come from the warm-up run and cover every stage.
    assert all(rows[0]["flops"][stage] > 0 for stage in bench.STAGES)
    assert rows[2]["angle_vs_ours"][0] < 1e-4  # the encoders' batching changes float rounding only


def test_bench_levers_smoke_compares_each_lever_with_the_default(capsys):
    bench = load_benchmark("bench_levers.py")
    levers = ["clip-batch14", "encode-nchw", "decode-silu-inplace", "unet-eager-attn"]
    rows = bench.main(
        ["--tiny", "--height", "32", "--width", "32", "--repeats", "1", "--dtype", "fp32", "--levers"] + levers
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in table[1:]] == levers  # the separator row starts with "|-"
    by_lever = {row["lever"]: row for row in rows}
    assert by_lever["clip-batch14"]["max_diff"] < 1e-5  # the same CLIP, batched differently
    assert by_lever["decode-silu-inplace"]["max_diff"] == 0.0  # in place changes no number
    assert by_lever["unet-eager-attn"]["max_diff"] < 1e-4  # the same attention, another kernel
    assert all(row["default_s"] > 0 and row["lever_s"] > 0 for row in rows)


def test_bench_encoder_layout_smoke_prints_the_group_norm_table(capsys):
    bench = load_benchmark("bench_encoder_layout.py")
    bench.main(["--parts", "groupnorm"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]  # after the header
    assert [row[1] for row in rows] == ["NCHW", "NHWC", "NCHW", "NHWC"]
    assert all(float(cell) < 1e-6 for row in rows if row[1] == "NCHW" for cell in row[2:])  # float32 rounding
