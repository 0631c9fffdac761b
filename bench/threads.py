"""Why the service runs every model and FAISS call on one thread: a torch forward slows down once another live thread
owns an OpenMP team (here: one FAISS search from the main thread), because libgomp throttles its spin-waiting when
there are more team threads than cores. Median ms of an LA-Tiny 224x224 forward at batch 1 from a worker thread:

    python -m bench.threads
"""
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch  # noqa: F401  first, as in the service (app.state imports models before storage)
import faiss  # noqa: E402,I001  the two libraries bring their own libgomp: the load order matters
import numpy as np
from PIL import Image

from models.embedder import Embedder
from models.la_transformer import create_model


def main() -> None:
    worker = ThreadPoolExecutor(1)
    embedder = worker.submit(lambda: Embedder(create_model('amg_vit_tiny_patch16_224').eval())).result()
    image = Image.new('RGB', (64, 128), (100, 50, 20))

    def forward_ms(repeats: int = 40) -> float:
        """Each forward handed to the worker thread and waited for, as the service's request threads do."""
        def run() -> None:
            embedder([image])
        worker.submit(run).result()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            worker.submit(run).result()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)

    alone = forward_ms()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(2688))
    index.add_with_ids(np.random.rand(36, 2688).astype(np.float32), np.arange(36))
    index.search(np.random.rand(1, 2688).astype(np.float32), 10)  # the main thread now owns an OpenMP team
    shared = forward_ms()
    print(f'forward on the model thread, no other OpenMP team: {alone:.1f} ms; after one FAISS search in the main '
          f'thread: {shared:.1f} ms ({shared / alone:.2f}x)')


if __name__ == '__main__':
    main()
