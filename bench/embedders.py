"""The default-embedder decision in figures: all-MiniLM-L6-v2 int8 ONNX against fp32 PyTorch.

    pip install -e '.[torch]' && python -m bench.embedders [--threads 1]

Measures in one process, on the chunks of docs/ and tests/fixtures/corpus/: agreement (cosine
between the two backends' vectors of the same text), one-query latency (a short question, as a
chat message is embedded), and batch throughput (chunks/s, as ingestion embeds). PyTorch is the
baseline of each ratio. Without the [torch] extra only the ONNX figures are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench._common import DEFAULT_CORPUS, summary
from knowledge.chunking import chunk_sections
from knowledge.embedders.onnx import OnnxMiniLM
from knowledge.embedders.tokenizer import count_tokens
from knowledge.loaders import expand_sources, load_file

QUERIES = ["How do I connect the Slack adapter?", "What does the finally clause do?",
           "Where are the logs kept on Linux?", "Which port does the server listen on?",
           "How is a webhook request signed?", "What is the default chunk size?"]


def corpus_texts() -> list[str]:
    texts = []
    for path in expand_sources(DEFAULT_CORPUS):
        doc = load_file(path)
        texts += [c.embed_text for c in chunk_sections(doc.title, doc.sections, chunk_tokens=192,
                                                       overlap_tokens=32,
                                                       count_tokens=count_tokens)]
    return texts


def measure(model: OnnxMiniLM, texts: list[str], rounds: int) -> tuple[list[float], float]:
    model.embed(texts[:8])
    latencies = []
    for i in range(rounds):
        t0 = time.perf_counter()
        model.embed([QUERIES[i % len(QUERIES)]])
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.embed(texts)
    return latencies, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    texts = corpus_texts()
    mean_tokens = sum(count_tokens(t) for t in texts) / len(texts)
    print(f"corpus: {len(texts)} chunks, mean {mean_tokens:.0f} tokens; threads={args.threads}")
    onnx = OnnxMiniLM(threads=args.threads)
    onnx_lat, onnx_rate = measure(onnx, texts, args.rounds)
    print(f"onnx int8   one query: {summary(onnx_lat)}; batch: {onnx_rate:.1f} chunks/s")
    try:
        from knowledge.embedders.torch import TorchMiniLM
        torch_model = TorchMiniLM(threads=args.threads)
    except Exception as exc:
        print(f"torch fp32: not installed ({exc})")
        return
    torch_lat, torch_rate = measure(torch_model, texts, args.rounds)  # type: ignore[arg-type]
    print(f"torch fp32  one query: {summary(torch_lat)}; batch: {torch_rate:.1f} chunks/s")
    cos = np.sum(onnx.embed(texts) * torch_model.embed(texts), axis=1)
    print(f"agreement: cosine min {cos.min():.4f}, mean {cos.mean():.4f}")
    print(f"ratio onnx/torch: one-query median latency "
          f"{np.median(onnx_lat) / np.median(torch_lat):.2f}, "
          f"batch throughput {onnx_rate / torch_rate:.2f}")


if __name__ == "__main__":
    main()
