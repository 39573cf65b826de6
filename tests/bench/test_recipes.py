"""bench/recipe.py's recipes are override lists on top of the demo preset: each must mean the
same recipe whatever the preset's defaults are now (the preset changes when a recipe wins)."""

import pytest

from bench import recipe
from cluster.config import load_config, replace


def resolved(name: str):
    return load_config("demo", [*recipe.COMMON, *recipe.RECIPES[name]])


@pytest.mark.parametrize("name", sorted(recipe.RECIPES))
def test_every_recipe_is_a_valid_config(name):
    cfg = resolved(name)
    assert cfg.learner.eval_trials == 3000
    assert cfg.data.eval_min_utterances == recipe.EVAL_MIN_UTTERANCES


def test_recipes_do_not_inherit_the_presets_later_choices():
    """The demo preset speed-perturbs, normalises the level only, and so on; a recipe that
    does not ask for those must not get them from it."""
    first = resolved("constant")
    assert (first.model.input_norm, first.learner.loss) == ("cmvn", "triplet")
    assert not first.augment.enabled and first.learner.margin == 0.1

    old = resolved("views-margin")  # the default before gain + speed
    assert old.augment.enabled and old.augment.channel_prob == 0.8
    assert old.augment.speed_prob == 0
    assert (old.model.input_norm, old.learner.loss, old.learner.margin) == ("cmn", "triplet", 0.2)
    assert old.learner.pretrain_steps == 0 and old.learner.weight_decay == 0

    gs = resolved("views-gspeed")
    assert (gs.model.input_norm, gs.augment.speed_prob, gs.learner.loss) == (
        "gain",
        0.5,
        "triplet",
    )
    aam = resolved("views-gsaam")
    assert (aam.learner.loss, aam.learner.pretrain_steps) == ("aam+triplet", 300)
    assert aam.model.input_norm == "gain" and aam.augment.speed_prob == 0.5


@pytest.mark.parametrize("name, preset", [("views-gsaam", "demo"), ("views-gswide", "small")])
def test_the_recipes_named_for_the_presets_train_what_the_presets_do(name, preset):
    """The figures the docs give for a preset are the figures of its recipe: the two agree
    in everything but the budget (the bench sets steps or minutes itself)."""
    got, want = resolved(name), load_config(preset)
    for section in ("model", "augment", "sampler", "features", "data"):
        assert getattr(got, section) == getattr(want, section), section
    budget = {"max_steps": 0, "max_minutes": 0}
    assert replace(got, learner=budget).learner == replace(want, learner=budget).learner
