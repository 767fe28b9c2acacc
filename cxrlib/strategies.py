"""The strategy registry: the one place that says what each transfer strategy is.

Read by the plan (which stages a run needs), the data stage (whether source data is needed),
the notebooks (options of a transfer stage), :mod:`cxrlib.experiment` (strategy variants) and
:mod:`cxrlib.transfer` (how a model is initialised). No TensorFlow here: ``cxr run`` reads it
before any stage starts.

Each entry names its **transfer method** (``strategy``: how :func:`cxrlib.transfer.init_model`
builds the target model -- ``scratch``, ``imagenet``, or from a source stage's model with
``domain_extension`` / ``twice``), the **source stage** it starts from (task and
initialisation), and default options (``keep_neurons``). An experiment YAML uses these names
under ``strategies:``; options written there override the entry's (``twice_onk: {}`` is enough).

Papers: ``domain_extension`` is paper A's DETL (Basu et al. 2020, arXiv 2004.10507): a source
stage on NIH ChestX-ray14 grouped normal/disease, from scratch; ``twice`` and ``twice_onk`` are
paper B's twice transfer and output neuron keeping (Bassi & Attux 2020, arXiv 2005.01578):
ImageNet -> 14 NIH findings -> target.

Adding a strategy = one entry here (+ its name in an experiment YAML); a new *transfer method*
also needs its branch in :func:`cxrlib.transfer.init_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Strategy:
    """One registry entry.

    Attributes:
        strategy: transfer method (a key of :data:`TRANSFER_METHODS`).
        description: one line for reports and ``--help``.
        source: the source stage it starts from, ``{"task": ..., "init": ...}``, or None.
        options: default stage options (e.g. ``{"keep_neurons": "default"}``).
    """

    strategy: str
    description: str
    source: Mapping[str, str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


# Transfer methods: how the target model is initialised (cxrlib.transfer.init_model).
TRANSFER_METHODS: dict[str, str] = {
    "scratch": "random initialisation, trained on the target task",
    "imagenet": "ImageNet weights, fine-tuned on the target task (paper B common transfer)",
    "domain_extension": "source stage on NIH-style chest X-rays, head replaced, fine-tuned (paper A DETL)",
    "twice": "ImageNet -> NIH 14 findings (sigmoid) -> target (paper B twice transfer)",
}
# Methods whose target stage starts from a source stage's model.h5.
SOURCE_METHODS: tuple[str, ...] = ("domain_extension", "twice")

STRATEGIES: dict[str, Strategy] = {
    "scratch": Strategy("scratch", TRANSFER_METHODS["scratch"]),
    "imagenet": Strategy("imagenet", TRANSFER_METHODS["imagenet"]),
    "domain_extension": Strategy("domain_extension", TRANSFER_METHODS["domain_extension"],
                                 source={"task": "normal_disease", "init": "scratch"}),
    "twice": Strategy("twice", TRANSFER_METHODS["twice"], source={"task": "nih14", "init": "imagenet"}),
    "twice_onk": Strategy("twice", "twice transfer + output neuron keeping (paper B): the source's "
                          "Pneumonia neuron copied into the target head",
                          source={"task": "nih14", "init": "imagenet"}, options={"keep_neurons": "default"}),
}


def check_method(method: str) -> str:
    """Return ``method`` or raise a ValueError listing the transfer methods."""
    if method not in TRANSFER_METHODS:
        raise ValueError(f"unknown strategy {method!r}; choose one of {', '.join(TRANSFER_METHODS)}")
    return method


def resolve(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Options of strategy ``name`` as an experiment uses it: registry defaults, then ``options``.

    A name outside the registry takes its transfer method from ``options["strategy"]``
    (default: the name itself), e.g. ``my_variant: {strategy: twice, train: {...}}``;
    :func:`check` says whether the result is a known method.

    Returns:
        The options with ``strategy`` (the transfer method) always set.
    """
    entry = STRATEGIES.get(name)
    out: dict[str, Any] = dict(entry.options) if entry else {}
    out["strategy"] = entry.strategy if entry else name
    out.update(dict(options or {}))
    return out


def check(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`resolve`, raising a ValueError when the strategy names no known transfer method."""
    out = resolve(name, options)
    if out["strategy"] not in TRANSFER_METHODS:
        raise ValueError(f"strategy {name!r}: unknown; use a registered name ({', '.join(STRATEGIES)}) "
                         f"or give `strategy:` one of {', '.join(TRANSFER_METHODS)}")
    return out


def method_of(name: str, options: Mapping[str, Any] | None = None) -> str:
    """The transfer method of a strategy (``twice_onk`` -> ``twice``)."""
    return resolve(name, options)["strategy"]


def uses_source(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """True when the strategy starts from a source stage's model."""
    return method_of(name, options) in SOURCE_METHODS


def source_of(name: str, options: Mapping[str, Any] | None = None) -> dict[str, str] | None:
    """The source stage spec ``{"task", "init"}`` of a strategy, or None."""
    if not uses_source(name, options):
        return None
    entry = STRATEGIES.get(name) or next(
        (s for s in STRATEGIES.values() if s.strategy == method_of(name, options) and s.source), None)
    return dict(entry.source) if entry and entry.source else None
