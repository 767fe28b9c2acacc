"""Graph-mode worker for LRP (runs in its own process; see :mod:`cxrlib.explain.lrp`).

iNNvestigate 2.1.2 needs TensorFlow's eager execution disabled, which is a process-wide,
one-way switch; this module is therefore only ever imported in a spawned child process. The
child loads saved ``.h5`` models (a ``.keras`` file loads with wrong weights in graph mode,
silently) into its one graph -- several models may share a process, each under its file path --
removes each one's output activation (:func:`logits_model`) and keeps one analyzer per (method,
parameters, neuron selection mode) and model. Library warnings are routed to the
``cxrlib.explain.lrp`` log.
"""

from __future__ import annotations

import time

import numpy as np

_STATE: dict = {"models": {}}  # models: file path -> {model, logits_model, both, analyzers, ...}


def fast_graph_layer_creation(enabled: bool = True) -> bool:
    """Switch Keras' graph-mode TensorFlowOpLayer creation to its fast ("unsafe") path.

    iNNvestigate builds the reversed (relevance) graph from raw TF ops; in graph mode Keras wraps
    every such op in a ``TensorFlowOpLayer`` and, by default, *evaluates* each constant input of
    the op in a fresh ``backend.function`` call, which dominates analyzer building on deep
    models (measured on DenseNet121 at 224 px: 1,171 s -> 36 s to the first ``lrp.epsilon``
    heatmap, bit-identical maps). Keras' private flag
    ``keras.src.engine.base_layer_utils._UNSAFE_GRAPH_OP_LAYER_CREATION`` keeps those inputs as
    graph tensors instead. Its documented downside is that the resulting models cannot be
    serialised with ``get_config``, which the analyzer models never are. Verified in
    ``tests/explain/test_lrp.py`` (fast vs slow path on a small model) and in
    ``benchmarks/bench_heatmaps.py``.

    Args:
        enabled: True for the fast path, False for Keras' default.

    Returns:
        The previous value of the flag.
    """
    from keras.src.engine import base_layer_utils

    previous = bool(base_layer_utils._UNSAFE_GRAPH_OP_LAYER_CREATION)
    base_layer_utils._UNSAFE_GRAPH_OP_LAYER_CREATION = bool(enabled)
    return previous


def logits_model(model):
    """The model without its output activation (softmax/sigmoid): relevance explains the logit.

    Same construction as ``innvestigate.model_wo_softmax`` / ``model_wo_output_activation``
    (re-apply the last layer with a linear activation on the same input, same weights), but the
    copy gets an explicit unique name: innvestigate's copy is auto-named, and in a fresh process
    that name ("dense") collides with an auto-named layer of the loaded model ("The name 'dense'
    is used 2 times in the model").
    """
    from tensorflow import keras

    last = model.layers[-1]
    name = getattr(getattr(last, "activation", None), "__name__", "linear")
    if name == "linear":
        return model
    if isinstance(last, keras.layers.Activation):  # separate activation layer: take its input
        out = last.input
    else:
        cfg = dict(last.get_config(), activation="linear", name=f"{last.name}_logits")
        copy = type(last).from_config(cfg)
        out = copy(last.input)
        copy.set_weights(last.get_weights())
    return keras.Model(model.inputs, out, name=f"{model.name}_logits")


def init(model_path: str | None = None, fast: bool = True) -> None:
    """Process initializer: graph mode, fast path switch; load ``model_path`` when given.

    An exception here would only surface as a bare ``BrokenProcessPool`` in the parent, so it is
    kept and re-raised (with the worker's traceback) by the next call.
    """
    try:
        _init(fast)
        if model_path is not None:
            load(model_path)
    except Exception:  # noqa: BLE001 - reported to the parent by _check()
        import traceback

        _STATE["error"] = f"LRP worker could not start or load {model_path}:\n{traceback.format_exc()}"


class _quiet:
    """Route library warnings (iNNvestigate dtype casts, TF deprecations) to the log, not stderr."""

    def __enter__(self):
        import logging
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        self._log = logging.getLogger("cxrlib.explain.lrp")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        seen = set()
        for w in self._caught:
            msg = f"{w.category.__name__}: {w.message}"
            if msg not in seen:
                seen.add(msg)
                self._log.debug("%s (%s:%s)", msg, w.filename, w.lineno)
        return False


def _check() -> None:
    if "error" in _STATE:
        raise RuntimeError(_STATE["error"])


def _init(fast: bool) -> None:
    from cxrlib.runtime import configure_env

    configure_env()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # graph-mode deprecation notices: not for the report
    tf.compat.v1.disable_eager_execution()
    fast_graph_layer_creation(fast)
    _STATE["fast"] = fast


def load(model_path: str) -> dict:
    """Load a saved model into this process's graph (once per path); returns :func:`info`.

    Models loaded side by side keep their own variables (Keras uniquifies the graph's op names;
    layer names only need to be unique within a model), so one process serves every model of
    a notebook: one TensorFlow import and process start instead of one per model.
    """
    import tensorflow as tf

    _check()
    if model_path not in _STATE["models"]:
        t0 = time.perf_counter()
        try:
            with _quiet():
                model = tf.keras.models.load_model(model_path, compile=False)
        except Exception as exc:  # noqa: BLE001 - the parent sees the file named, not a bare OSError
            raise RuntimeError(f"LRP worker could not load {model_path}: {type(exc).__name__}: {exc}") from None
        logits = logits_model(model)
        both = tf.keras.Model(model.inputs, [model.output, logits.output], name="probs_and_logits")
        _STATE["models"][model_path] = dict(model=model, logits_model=logits, both=both, analyzers={},
                                            load_seconds=time.perf_counter() - t0)
    return info(model_path)


def info(model_path: str) -> dict:
    """Model facts for the parent process (input shape, outputs, load time, fast flag)."""
    from keras.src.engine import base_layer_utils

    _check()
    entry = _STATE["models"][model_path]
    model = entry["model"]
    return {"input_shape": tuple(model.input_shape[1:]), "n_outputs": int(model.output_shape[-1]),
            "load_seconds": entry["load_seconds"], "fast": _STATE["fast"],
            "flag": bool(base_layer_utils._UNSAFE_GRAPH_OP_LAYER_CREATION)}


def _fused(an, entry: dict):
    """One graph call for relevance + probabilities + logits: [relevance [N, H, W, C], probs, logits].

    The analyzer model shares the loaded model's input placeholder and forward tensors, so the
    session runs the forward pass once for all three (a separate ``predict`` for the class
    choice cost a second forward pass: the wrapper's 1.5x overhead). None when the analyzer has
    debug outputs or constant inputs (then the plain ``analyze`` path is used).
    """
    import tensorflow as tf

    am = an._analyzer_model
    if an._n_debug_output or an._n_constant_input or an._n_data_output != 1:
        return None
    return tf.compat.v1.keras.backend.function(
        am.inputs, am.outputs[:1] + [entry["model"].output, entry["logits_model"].output])


def _analyzer(entry: dict, method: str, params: tuple, select: str):
    """Cached (analyzer, fused function, build seconds) per (method, parameters, selection mode) of a model."""
    import innvestigate

    key = (method, params, select)
    if key not in entry["analyzers"]:
        t0 = time.perf_counter()
        with _quiet():
            an = innvestigate.create_analyzer(method, entry["logits_model"], neuron_selection_mode=select,
                                              **dict(params))
            an.create_analyzer_model()
            fused = _fused(an, entry)
        entry["analyzers"][key] = (an, fused, time.perf_counter() - t0)
    return entry["analyzers"][key]


def analyze(model_path: str, method: str, images: np.ndarray, class_index, params: tuple = ()) -> dict:
    """Relevance of the chosen/predicted class for a batch, by the model loaded from ``model_path``.

    ``class_index`` None: iNNvestigate's ``max_activation`` selection (the arg-max logit, which is
    the arg-max probability); else ``index`` selection. Relevance, probabilities and logits come
    from one session run (:func:`_fused`).

    Returns:
        dict with ``relevance`` float32 [N, H, W, C] (per input channel), ``class_index`` [N],
        ``logits`` [N, K] (pre-activation outputs), ``probs`` [N, K], ``build_seconds`` (analyzer
        construction, 0 when cached) and ``seconds`` (this call's analysis time).
    """
    _check()
    entry = _STATE["models"][model_path]
    select = "max_activation" if class_index is None else "index"
    cached = (method, params, select) in entry["analyzers"]
    an, fused, build = _analyzer(entry, method, params, select)
    t0 = time.perf_counter()
    feed = [images]
    if select == "index":
        feed.append(an._get_neuron_selection_array([int(i) for i in class_index], len(images)))  # [N, 2]
    with _quiet():
        if fused is not None:
            rel, probs, logits = fused(feed)
        else:  # plain path: a forward pass for the outputs, then the analyzer
            probs, logits = entry["both"].predict(images, verbose=0)
            rel = an.analyze(images, neuron_selection=None if class_index is None else list(class_index))
    idx = np.asarray(logits).argmax(axis=1) if class_index is None else np.asarray(class_index, dtype=int)
    return {"relevance": np.asarray(rel, dtype=np.float32), "class_index": idx.astype(int),
            "logits": np.asarray(logits, np.float32), "probs": np.asarray(probs, np.float32),
            "build_seconds": 0.0 if cached else build, "seconds": time.perf_counter() - t0}
