"""One training step of the reference (timm resnet18, 64x64, batch 128) in fp32 and in bf16 autocast.

    python bench/precision_step.py --out results/precision_step/precision_step.json [--threads 2]

Why the 100-class reference trains with ``trainer.precision=bf16-mixed`` on CPU: forward, backward
and an SGD step on random data, the two precisions interleaved (``--repeats`` rounds, each timing
``--steps`` steps of each) so a machine that is busy with something else slows both alike; the
result is the median step time of each and their ratio. It also records whether the CPU has
avx512_bf16 / amx_bf16 (where bf16 helps; elsewhere it may be slower).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def main() -> None:
    p = bench_parser(__doc__, threads=2, data=False)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    start_bench(args)
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=100)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(args.batch, 3, 64, 64), torch.randint(0, 100, (args.batch,))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(2):  # warm-up: allocator, oneDNN kernels
        step(False), step(True)
    for _ in range(args.repeats):
        for name, bf16 in (("fp32", False), ("bf16", True)):
            t = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            times[name].append((time.perf_counter() - t) / args.steps)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    result = {"seconds_per_step": {"fp32": fp32, "bf16": bf16}, "bf16_speedup": fp32 / bf16,
              "batch": args.batch, "threads": args.threads, "cpu_bf16_flags": cpu_flags(), "all_times": times}  # fmt: skip
    write_provenance(Path(args.out), **result)
    print(f"fp32 {fp32:.3f} s/step, bf16 {bf16:.3f} s/step: bf16 is {fp32 / bf16:.2f}x faster -> {args.out}")


if __name__ == "__main__":
    main()
