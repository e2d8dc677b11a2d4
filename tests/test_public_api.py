"""The public API: explicit, complete, typed."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import prevad_rx as pv


def test_all_is_sorted_unique_and_resolvable() -> None:
    for module in (pv, pv.operators, pv.backends):
        names = module.__all__
        assert len(names) == len(set(names)), module
        for name in names:
            assert hasattr(module, name), (module.__name__, name)


OPTIONAL = {"vllm", "torch", "transformers", "safetensors", "aioreactive", "expression"}


def test_every_public_name_of_a_private_module_is_exported() -> None:
    """Whatever a private module declares public is reachable from a public namespace."""
    import prevad_rx.bench

    exported = (
        set(pv.__all__)
        | set(pv.operators.__all__)
        | set(pv.backends.__all__)
        | set(prevad_rx.bench.__all__)
    )
    internal_only = {
        "Handler",
        "operator_from",
        "NORMAL",
        "URGENT",
        "Task",
        "ModelStage",
        # the model stage's parts
        "DecodeBatch",
        "EncodeBatch",
        "Followup",
        "Lane",
        "LaneTable",
        "TaskSlots",
        "Work",
        "WatchedCall",
        "Watchdog",
        "decode_batch",
        "encode_batch",
        "Boundary",
        "SpeechSegmenter",
        "StreamResampler",
        "to_float32_mono",
        "validate_sample_rate",
        "model_sample_rate",
        "MIN_SAMPLE_RATE",
        "MAX_SAMPLE_RATE",
        "frame_geometry",
        "pinned_digests",
        "OnnxBackend",
        "BackendFactory",
        "DEFAULT_MAX_BUFFERED",
        "HandlerErrorHandler",
        "to_event",
        "main",
        "FastEncoder",
        "EncoderVerdict",
        "BLOCK",
        "cpu_model",
        "vector_extensions",
        "encoder_speed",
        "packets",
        "scaling",
        "EventFanout",
        "calibration_frames",
        "verify",
        # benchmark internals: the scenarios, references and report pieces
        "MACS_PER_FRAME",
        "chunk_latency",
        "engine_offline",
        "live_capacity",
        "live_streams",
        "memory",
        "offline_throughput",
        "FrameByFrame",
        "SequencePerChunk",
        "VadIteratorLike",
        "naive_split",
        "streaming_session",
        "windows_of",
        "machine",
        # the command line's pieces (its public face is the prevad-rx command)
        "AudioFileInfo",
        "UserError",
        "check_output_dir",
        # the drop-oldest queue of both stream kinds; the model stage's "not run" outcome
        "DropOldestQueue",
        "NotRun",
        "check_output_file",
        "check_readable",
        "read_blocks",
        "read_all",
        "EXTENSIONS",
        "FORMATS",
        "FileResult",
        "render",
        "detect",
        "stream_stdin",
        "plot_file",
        # backends are reached by name through the registry
        "VllmBackend",
        "VllmApiBackend",
        "run_in_rounds",
        "TorchBackend",
        "disable_tf32",
        # the torch backend's fixed-shape batching
        "Chunk",
        "PackedRuns",
        "bucket_for",
        "chunks",
        "pack_runs",
        "power_buckets",
        "scatter_index",
        "time_rounds",
        "unpack_runs",
        "SERVED_MODEL_NAME",
        "cpu_build",
        "default_model_dir",
        "engine_kwargs",
        "prepare_environment",
        "serve_arguments",
        # the vLLM plugin's pieces (vLLM loads them through entry points)
        "PrevadSileroVAD",
        "SileroIOProcessor",
        "SileroVAD16k",
        "build",
        "load_weights",
        "write_model_dir",
        "MODEL_TYPE",
        "PrevadSileroVADConfig",
        "register_config",
        "FRAME_WIDTH",
        "MAX_FRAMES",
        "OUTPUT_WIDTH",
        "ProtocolError",
        "decode_array",
        "encode_array",
        "pack_output",
        "request_payload",
        "unpack_output",
    }
    package = Path(pv.__file__).parent
    for info in pkgutil.walk_packages([str(package)], "prevad_rx."):
        if info.name.endswith("__main__"):
            continue
        if not any(part.startswith("_") for part in info.name.split(".")):
            continue  # a public module: its __all__ is its public API
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:  # a module of an optional extra whose package is absent
            missing = (exc.name or "").split(".")[0]
            if missing not in OPTIONAL:
                raise
            continue
        for name in getattr(module, "__all__", []):
            assert name in exported or name in internal_only, (info.name, name)


def test_typed_package_and_version() -> None:
    assert (Path(pv.__file__).parent / "py.typed").is_file()
    assert pv.__version__.count(".") == 2
