"""The strategy registry is the one place plan, notebooks, config validation and transfer read."""

from __future__ import annotations

import pytest

from cxrlib import strategies
from cxrlib.report.config import ConfigError, validate_experiment
from cxrlib.report.plan import build_plan, uses_source


def test_registry_entries_resolve_with_yaml_options_on_top():
    assert strategies.resolve("twice_onk") == {"keep_neurons": "default", "strategy": "twice"}
    assert strategies.resolve("twice_onk", {"keep_neurons": None})["keep_neurons"] is None
    assert strategies.method_of("my_variant", {"strategy": "domain_extension"}) == "domain_extension"
    assert strategies.source_of("domain_extension") == {"task": "normal_disease", "init": "scratch"}
    assert strategies.source_of("scratch") is None
    with pytest.raises(ValueError, match="unknown"):
        strategies.check("no_such_strategy")


def test_a_new_registry_entry_is_all_the_plan_needs(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, "twice_scratch",
                        strategies.Strategy("twice", "twice without ImageNet",
                                            source={"task": "nih14", "init": "scratch"}))
    cfg = {"name": "x", "task": "paper_b", "data": {"kind": "phantoms"}, "split": {"kind": "holdout"},
           "strategies": {"scratch": {}, "twice_scratch": {}}}
    validate_experiment(cfg)
    ids = [s.id for s in build_plan(cfg)]
    assert "02_source_pretraining" in ids and "03_transfer-twice_scratch" in ids
    assert uses_source("twice_scratch", {})


def test_unknown_strategy_in_a_config_names_the_key():
    cfg = {"name": "x", "task": "paper_b", "data": {"kind": "phantoms"}, "split": {"kind": "holdout"},
           "strategies": {"mystery": {}}}
    with pytest.raises(ConfigError, match="strategies.mystery"):
        validate_experiment(cfg, "x.yaml")
