"""ONNX Runtime alone, for the figures docs/benchmarks.md quotes beside its tables (sections 4 and 5b):

1. batch-1 forward of one LA-Tiny, each in a process of its own state: ORT with each `AMG_ONNX_SPIN` mode, ORT on
   one thread, and eager PyTorch (median ms);
2. the service's model-thread loop: a forward, then a FAISS search over 1,000 vectors, then 4 ms of other work,
   on a worker thread, for each spin mode (median ms of the forward and of the search);
3. ONNX Runtime's own profile: kernel time by operator type, and the optimised graph's operators.

    python -m bench.onnx_runtime [--img-size 224 224] [--model unpruned] [--batch 1]
"""
import argparse
import collections
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch  # first, as in the service
import faiss  # noqa: I001  each brings its own libgomp: the load order matters
import numpy as np

from bench.backends import pruned_models
from models.export import export_onnx
from models.onnx_backend import OnnxEmbedding, Spin
from models.speed import cpu_description


def median_ms(fn, repeats: int = 40) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def model_thread_loop(session: OnnxEmbedding, x: np.ndarray, index: faiss.Index, n: int = 100,
                      gap_s: float = 0.004) -> tuple:
    """(forward ms, search ms) medians of ``n`` forward + search rounds on a worker thread, ``gap_s`` apart."""
    forward, search = [], []

    def loop() -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            v = session(x)
            t1 = time.perf_counter()
            index.search(np.ascontiguousarray(v, dtype=np.float32), 10)
            t2 = time.perf_counter()
            forward.append(t1 - t0)
            search.append(t2 - t1)
            time.sleep(gap_s)
    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    return 1000 * statistics.median(forward), 1000 * statistics.median(search)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--img-size', nargs=2, type=int, default=[224, 224])
    p.add_argument('--model', choices=['unpruned', 'head67+token40', 'head50+drop50'], default='unpruned')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    a = p.parse_args()
    import onnxruntime as ort
    work = Path(tempfile.mkdtemp(prefix='amg-ort-'))
    model = pruned_models(a.img_size)[a.model].eval()
    export_onnx(model, work / 'model.onnx')
    x = np.random.default_rng(0).random((a.batch, 3, *a.img_size), dtype=np.float32)
    print(f'CPU: {cpu_description()}; onnxruntime {ort.__version__}, torch {torch.__version__}')
    print(f'LA-Tiny {a.model} {a.img_size[0]}x{a.img_size[1]}, batch {a.batch}, {a.threads} threads\n')

    print('| forward | median ms |\n|---|---|')
    for spin in Spin:
        session = OnnxEmbedding(work / 'model.onnx', a.threads, spin=spin)
        print(f'| ORT, spin {spin.value} | {median_ms(lambda: session(x)):.2f} |')
    session = OnnxEmbedding(work / 'model.onnx', 1, spin=Spin.RUN)
    print(f'| ORT, 1 thread | {median_ms(lambda: session(x)):.2f} |')
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        print(f'| eager PyTorch | {median_ms(lambda: model.embed(xt)):.2f} |')

    index = faiss.IndexFlatIP(model.embedding_dim)
    index.add(np.random.default_rng(1).standard_normal((1000, model.embedding_dim), dtype=np.float32))
    print('\nThe model thread: forward, FAISS search (1,000 vectors), 4 ms of other work; 4 interleaved rounds')
    print('| spin | forward ms | search ms |\n|---|---|---|')
    sessions = {spin: OnnxEmbedding(work / 'model.onnx', a.threads, spin=spin) for spin in Spin}
    results = {spin: ([], []) for spin in Spin}
    for _ in range(4):
        for spin, session in sessions.items():
            f, s = model_thread_loop(session, x, index)
            results[spin][0].append(f)
            results[spin][1].append(s)
    for spin, (f, s) in results.items():
        print(f'| {spin.value} | {statistics.median(f):.2f} | {statistics.median(s):.3f} |')

    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.enable_profiling = True
    options.profile_file_prefix = str(work / 'profile')
    options.optimized_model_filepath = str(work / 'optimized.onnx')
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    profiled = ort.InferenceSession(str(work / 'model.onnx'), options, providers=['CPUExecutionProvider'])
    name, runs = profiled.get_inputs()[0].name, 30
    for _ in range(runs):
        profiled.run(None, {name: x})
    by_op, count = collections.Counter(), collections.Counter()
    for event in json.loads(Path(profiled.end_profiling()).read_text()):
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            by_op[event['args']['op_name']] += event['dur']
            count[event['args']['op_name']] += 1
    total = sum(by_op.values())
    print(f'\nONNX Runtime profile, {runs} runs: kernel time by operator ({total / runs / 1000:.2f} ms a run, '
          'profiling included)')
    print('| operator | share | ms a run | nodes |\n|---|---|---|---|')
    for op, us in by_op.most_common(10):
        print(f'| {op} | {100 * us / total:.1f}% | {us / runs / 1000:.2f} | {count[op] // runs} |')
    import onnx
    graph = onnx.load(str(work / 'optimized.onnx')).graph
    print('\noptimised graph:', ', '.join(f'{op} {n}' for op, n in
                                          collections.Counter(n.op_type for n in graph.node).most_common(12)))


if __name__ == '__main__':
    main()
