"""Serving benchmark: multi-adapter batching against merge/generate/unmerge swapping, and adapter latency.

On the default model (or ``--model``), in one run:
- decode tokens/s of the inference engine for ``--batch`` rows of the base model, of one adapter (unmerged),
  of ``--batch`` different adapters mixed in one batch, and of one adapter in merged mode;
- end-to-end tokens/s of the swap approach a user might write: per request, merge the adapter, generate,
  unmerge (requests run one at a time, as swapping weights forbids batching different adapters);
- decode tokens/s of single forward steps (base, one adapter, mixed adapters) interleaved step by step;
  on the CPU timed in process CPU time, so that other load on a shared machine does not decide the ratios
  (the throughput targets are checked on these);
- loading an adapter from disk (read, sha256, checks), time to first token for an adapter not yet cached,
  for a cached one just after another adapter ran, and for the base model, and the engine's own work to
  switch a row between cached adapters (the switching target is checked on it).

Adapters are random DiaBlo blocks (small values, N=64, default targets) saved with save_adapter: only the
shapes matter for speed. Example: ``python benchmarks/serving.py --max-tokens 32 --json out.json``.

``--dtype bf16`` runs all of it with the weights in bf16; ``--dtype both`` runs it in fp32 and then compares
decode throughput in fp32 and bf16, base and mixed adapters (``benchmarks/serving_dtypes.py``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diablo_core.generation.decoding import generate
from diablo_core.methods.diablo.adapter_io import load_adapter_tensors, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import (
    apply_diablo,
    load_adapter_state_dict,
    merge_diablo,
    unload_diablo,
    unmerge_diablo,
)
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import torch_dtype
from diablo_core.serving import AdapterRef, GenerationRequest, InferenceEngine, read_adapter

TOPICS = ["a lighthouse", "the moon", "a lost key", "rain", "a robot", "an old map", "tea", "a river"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="base model name (default: the default model)")
    parser.add_argument("--data-dir", default="data", help="where the default model's checkpoint lives")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="rows per batch and number of distinct adapters")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each latency measurement")
    parser.add_argument("--context", type=int, default=64, help="cache length of the decode-step benchmark")
    parser.add_argument("--steps", type=int, default=15, help="interleaved decode steps per mode")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the engine modes")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "both"], default="fp32", help="weights' dtype (both: compare)"
    )
    return parser.parse_args()


def make_adapters(model, identity, count: int, directory: Path) -> tuple[list[AdapterRef], torch.nn.Module]:
    """Saves ``count`` random adapters; returns their refs and the DiaBlo-applied copy (for swapping)."""
    adapted = copy.deepcopy(model)
    apply_diablo(adapted, DiaBloConfig(num_blocks=64, dropout=0.0))
    refs = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, parameter in adapted.named_parameters():
                if name.endswith(".blocks"):
                    values = torch.randn(parameter.shape, generator=generator) * 1e-3
                    parameter.copy_(values.to(parameter.dtype))
        path = save_adapter(adapted, directory / f"adapter-{index}", base_model=identity)
        digest = hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()
        refs.append(AdapterRef(digest, path))
    return refs, adapted


def requests_for(adapters: list[AdapterRef | None], max_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            adapter=ref,
            messages=[{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}],
            max_tokens=max_tokens,
        )
        for i, ref in enumerate(adapters)
    ]


def _keep_best(throughput: dict, mode: str, measured: dict[str, float]) -> None:
    best = throughput.get(mode)
    if best is None or measured["decode_tok_s"] > best["decode_tok_s"]:
        throughput[mode] = measured


def run_batch(engine: InferenceEngine, requests: list[GenerationRequest]) -> dict[str, float]:
    """Runs the requests together; returns wall time, tokens and the engine's decode-only rate."""
    stats = engine.stats
    steps_before, tokens_before, seconds_before = (
        stats.decode_steps,
        stats.decode_tokens,
        stats.decode_seconds,
    )
    started = time.perf_counter()
    results = [handle.result() for handle in [engine.submit(request) for request in requests]]
    wall = time.perf_counter() - started
    tokens = sum(result.completion_tokens for result in results)
    decode_tokens = stats.decode_tokens - tokens_before
    decode_seconds = stats.decode_seconds - seconds_before
    return {
        "rows": len(requests),
        "completion_tokens": tokens,
        "wall_s": wall,
        "end_to_end_tok_s": tokens / wall,
        "decode_tok_s": decode_tokens / decode_seconds,
        "decode_steps": stats.decode_steps - steps_before,
    }


def run_swap(
    adapted, tokenizer, refs: list[AdapterRef], requests: list[GenerationRequest]
) -> dict[str, float]:
    """The swap approach: per request, load the blocks, merge, generate alone, unmerge."""
    states = [load_adapter_tensors(ref.path) for ref in refs]  # held in memory, as a user would
    tokens, started = 0, time.perf_counter()
    for state, request in zip(states, requests, strict=True):
        load_adapter_state_dict(adapted, state)
        merge_diablo(adapted)
        result = generate(adapted, tokenizer, messages=request.messages, max_new_tokens=request.max_tokens)
        unmerge_diablo(adapted)
        tokens += result.completion_tokens
    wall = time.perf_counter() - started
    return {
        "rows": len(requests),
        "completion_tokens": tokens,
        "wall_s": wall,
        "end_to_end_tok_s": tokens / wall,
    }


def ttft_ms(engine: InferenceEngine, ref: AdapterRef | None) -> float:
    """Time to the first token (a one-token request on an idle engine), in milliseconds."""
    request = requests_for([ref], 1)[0]
    started = time.perf_counter()
    engine.generate(request)
    return (time.perf_counter() - started) * 1000


def latencies(
    engine: InferenceEngine, identity, fresh: list[AdapterRef], cached: list[AdapterRef], repeats: int
) -> dict[str, float]:
    """Adapter load time from disk and times to first token, each the minimum over ``repeats``.

    The minimum is the least disturbed by other processes on a shared machine. Switching is measured as the
    time to first token of a cached adapter right after another adapter ran, minus the same right after
    the same adapter ran: both do the same work but for the switch itself.
    """
    load = []
    for _ in range(repeats):
        started = time.perf_counter()
        read_adapter(fresh[0], identity, engine.adapters)
        load.append((time.perf_counter() - started) * 1000)
    uncached = [ttft_ms(engine, ref) for ref in fresh[:repeats]]
    switched, same, base = [], [], []
    for index in range(repeats):
        first, second = cached[index % 2], cached[(index + 1) % 2]
        ttft_ms(engine, first)
        switched.append(ttft_ms(engine, second))  # another adapter ran last
        same.append(ttft_ms(engine, second))  # the same adapter ran last
        base.append(ttft_ms(engine, None))
    return {
        "switch_work_ms": switch_work_ms(engine, cached, repeats),
        "adapter_load_ms": min(load),
        "ttft_uncached_adapter_ms": min(uncached),
        "ttft_cached_adapter_after_another_ms": min(switched),
        "ttft_cached_adapter_after_itself_ms": min(same),
        "ttft_base_ms": min(base),
        "switch_overhead_ms": min(switched) - min(same),
    }


def step_rates(
    engine: InferenceEngine, refs: list[AdapterRef], context: int, rounds: int
) -> dict[str, float]:
    """Decode tokens/s of single forward steps over a ``context``-token cache, modes interleaved (median).

    Interleaving step by step, and on the CPU timing this process's CPU time rather than wall time, makes
    the comparison between modes robust to other load on a shared machine.
    """
    model, batch = engine.adapters.model, len(refs)
    slots = [engine.cache.acquire(ref.sha256) for ref in refs]  # resident after the engine runs
    modes = {"base": [0] * batch, "one adapter (unmerged)": [slots[0]] * batch, "mixed adapters": slots}
    device = next(model.parameters()).device
    ids = torch.randint(0, 1000, (batch, context), generator=torch.Generator().manual_seed(0)).to(device)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)  # (B, context) prefill
        for _ in range(rounds):
            for mode, row_slots in modes.items():
                started = clock()
                with engine.adapters.route(row_slots):
                    logits = model(input_ids=ids[:, -1:], past_key_values=cache, logits_to_keep=1).logits
                logits.sum().item()  # waits for the device
                times[mode].append(clock() - started)
                cache.crop(-1)  # drops the step's token: every step sees the same context
    for ref in refs:
        engine.cache.release(ref.sha256)
    return {mode: batch / statistics.median(values) for mode, values in times.items()}


def switch_work_ms(engine: InferenceEngine, cached: list[AdapterRef], repeats: int) -> float:
    """The engine's own work to route a row to another cached adapter: pin it and set the row slots."""
    times = []
    for index in range(repeats * 20):
        ref = cached[index % 2]
        started = time.perf_counter()
        slot = engine.cache.acquire(ref.sha256)
        with engine.adapters.route([slot]):
            pass
        engine.cache.release(ref.sha256)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def report(results: dict) -> str:
    """The results as a markdown table followed by the target checks."""
    lines = [
        "| mode | rows | completion tokens | wall s | end-to-end tok/s | decode tok/s |",
        "|" + " --- |" * 6,
    ]
    for mode, row in results["throughput"].items():
        decode = f"{row['decode_tok_s']:.1f}" if "decode_tok_s" in row else "n/a"
        lines.append(
            f"| {mode} | {row['rows']} | {row['completion_tokens']} | {row['wall_s']:.2f} | "
            f"{row['end_to_end_tok_s']:.1f} | {decode} |"
        )
    clock = "CPU time" if results["device"] == "cpu" else "wall time"
    lines += ["", f"| decode step, interleaved (median {clock}) | tok/s |", "| --- | --- |"]
    lines += [f"| {mode} | {rate:.1f} |" for mode, rate in results["decode_step_tok_s"].items()]
    lines += ["", "| latency | ms |", "| --- | --- |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in results["latency"].items()]
    lines += ["", "| target | value | met |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {'yes' if met else 'NO'} |" for name, value, met in results["targets"]]
    return "\n".join(lines)


def targets(steps: dict[str, float], latency: dict) -> list[tuple[str, str, bool]]:
    single = steps["one adapter (unmerged)"]
    mixed = steps["mixed adapters"] / single
    overhead = steps["base"] / single - 1
    return [
        ("mixed batch >= 0.8x single-adapter decode", f"{mixed:.2f}x", mixed >= 0.8),
        ("unmerged adapter <= 10% over base", f"{overhead * 100:.1f}%", overhead <= 0.10),
        (
            "switching cached adapters <= 5 ms (engine work per switch)",
            f"{latency['switch_work_ms']:.3f} ms",
            latency["switch_work_ms"] <= 5,
        ),
        (
            "adapter load from disk <= 100 ms",
            f"{latency['adapter_load_ms']:.1f} ms",
            latency["adapter_load_ms"] <= 100,
        ),
    ]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype("fp32" if args.dtype == "both" else args.dtype)
    loaded = load_base_model(args.model, data_dir=args.data_dir, device=args.device, dtype=dtype)
    model, tokenizer, identity = loaded.model, loaded.tokenizer, loaded.identity
    with tempfile.TemporaryDirectory() as scratch:
        refs, adapted = make_adapters(model, identity, args.batch + args.repeats, Path(scratch))
        batch_refs, fresh = refs[: args.batch], refs[args.batch :]
        if args.dtype == "both":
            from benchmarks.serving_dtypes import compare_dtypes

            dtypes = compare_dtypes(model, tokenizer, identity, batch_refs, args)
        throughput = {}
        with InferenceEngine(model, tokenizer, identity=identity, max_batch_size=args.batch) as engine:
            run_batch(engine, requests_for([None] * 2, 4))  # warm-up
            single = requests_for([batch_refs[0]] * args.batch, args.max_tokens)
            mixed = requests_for(batch_refs, args.max_tokens)
            modes = {
                "base": requests_for([None] * args.batch, args.max_tokens),
                "one adapter (unmerged)": single,
                "mixed adapters": mixed,
            }
            for _ in range(args.rounds):  # interleaved rounds, best kept: other load hits every mode alike
                for mode, requests in modes.items():
                    _keep_best(throughput, mode, run_batch(engine, requests))
            steps = step_rates(engine, batch_refs, args.context, args.steps)
            latency = latencies(engine, identity, fresh, batch_refs[:2], args.repeats)
        merged_model = copy.deepcopy(adapted)
        throughput["swap: merge, generate, unmerge"] = run_swap(adapted, tokenizer, batch_refs, mixed)
        del adapted
        plain = unload_diablo(merged_model, merge=False)
        with InferenceEngine(plain, tokenizer, identity=identity, merged_adapter=batch_refs[0]) as engine:
            run_batch(engine, requests_for([batch_refs[0]] * 2, 4))
            for _ in range(args.rounds):
                _keep_best(throughput, "one adapter (merged mode)", run_batch(engine, single))
    results = {
        "command": " ".join(["python", "benchmarks/serving.py", *sys.argv[1:]]),
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "throughput": throughput,
        "decode_step_tok_s": steps,
        "latency": latency,
    }
    results["targets"] = targets(steps, latency)
    print(report(results))
    if args.dtype == "both":
        from benchmarks.serving_dtypes import dtype_table

        results["dtypes"] = dtypes
        print("\n" + dtype_table(dtypes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
