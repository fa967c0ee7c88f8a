"""Child process of :mod:`.emulated`, run under qemu: ``python -m dfq_deploy.runtimes._ort_child THREADS``.

It serves ONNX Runtime sessions over its stdin / stdout: each message is an 8-byte little-endian length and an
``.npz`` archive (read with ``allow_pickle=False``). Requests: ``op=load`` (``model``: the serialized ONNX bytes,
``optimize``: 1 for level ALL, 0 for none) answers ``id``; ``op=run`` (``id``, ``outputs``: names, and one
``in:NAME`` array per input) answers one ``out:NAME`` array per output; ``op=cpu`` answers ``cpu`` (the
:func:`dfq_deploy.isa.cpu_info` this process sees, as JSON). A failure answers ``error``. It imports numpy,
onnxruntime, :mod:`dfq_deploy.isa` and :mod:`dfq_deploy.ort_session` only: torch would take minutes to load under
emulation.
"""

import io
import json
import struct
import sys

import numpy as np


def read_message(stream) -> dict | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    with np.load(io.BytesIO(stream.read(size)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_message(stream, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def serve(threads: int) -> None:
    from dfq_deploy.isa import cpu_info
    from dfq_deploy.ort_session import ort_session

    sessions = []
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while (msg := read_message(inp)) is not None:
        try:
            op = str(msg["op"])
            if op == "load":
                sessions.append(ort_session(msg["model"].tobytes(), optimize=bool(int(msg["optimize"])),
                                            threads=threads))
                write_message(out, {"id": np.array(len(sessions) - 1)})
            elif op == "run":
                sess = sessions[int(msg["id"])]
                names = [str(n) for n in msg["outputs"]] or [o.name for o in sess.get_outputs()]
                feeds = {k[3:]: v for k, v in msg.items() if k.startswith("in:")}
                values = sess.run(names, feeds)
                write_message(out, {f"out:{n}": v for n, v in zip(names, values)})
            elif op == "cpu":
                write_message(out, {"cpu": np.array(json.dumps(cpu_info()))})
            else:
                write_message(out, {"error": np.array(f"unknown op {op!r}")})
        except Exception as e:  # answered, so the parent reports it with its own error
            write_message(out, {"error": np.array(f"{type(e).__name__}: {e}")})


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
