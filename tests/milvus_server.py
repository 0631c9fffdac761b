"""A real Milvus standalone server for the slow tests: the PyPI package ``milvus`` bundles its binary.

    python -m tests.milvus_server BASE_DIR PORT     (stops the server on SIGTERM)
"""
import signal
import sys
import threading


def main() -> None:
    from milvus import default_server
    base_dir, port = sys.argv[1], int(sys.argv[2])
    default_server.set_base_dir(base_dir)
    default_server.listen_port = port
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    default_server.start()
    print('ready', flush=True)
    try:
        stopped.wait()
    finally:
        default_server.stop()


if __name__ == '__main__':
    main()
