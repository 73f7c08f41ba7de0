#!/usr/bin/env python3
"""Serves a GGUF model with llama.cpp's server, as embedded in the PyPI package xllamacpp.

xllamacpp ships llama.cpp's HTTP server (the code of `llama-server`) prebuilt in its
wheel. This starts it on 127.0.0.1 on a free port, with Jinja chat templates (as
`llama-server --jinja`: needed for tool calls), the model served under the name ALIAS,
prints one line `listening http://127.0.0.1:PORT` once the model is loaded and the
server listens, and serves until stdin closes or the process is killed.

Usage: serve.py MODEL.gguf ALIAS
"""

import sys

import xllamacpp as xlc


def main(model, alias):
    params = xlc.CommonParams()
    params.model.path = model
    params.model_alias = {alias}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # any free port; the address is printed below
    params.use_jinja = True
    params.n_ctx = 1024
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.warmup = False
    server = xlc.Server(params)
    print("listening", server.listening_address, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
