"""Registries: a class's name is written once, registrations can be scoped, and option values
a factory rejects become one UserError line naming them."""
import pytest

from metaaugment import AugmentationPolicy
from metaaugment.infra.errors import UserError
from metaaugment.registry import LEARNERS, MODELS, POLICIES, Registry


def test_registering_a_class_gives_it_its_cli_name():
    for registry in (POLICIES, LEARNERS):
        for entry in registry:
            assert entry.factory.name == entry.name


def test_scoped_registrations_end_with_the_block():
    before = POLICIES.names()
    with POLICIES.scoped():
        @POLICIES.register("scoped-test")
        class Scoped(AugmentationPolicy):
            """A policy that lives only inside the block."""

        assert "scoped-test" in POLICIES and Scoped.name == "scoped-test"
    assert POLICIES.names() == before


def test_a_rejected_value_names_the_option_even_when_the_factory_does_not():
    things = Registry("thing")

    @things.register("picky")
    def picky(*, size: int = 1, colour: str = "red") -> str:
        if size > 3:
            raise ValueError("too big")
        return colour

    with pytest.raises(UserError, match=r"^thing 'picky': rejects size=5: too big$"):
        things.create("picky", size=5)
    with pytest.raises(UserError, match="has no option shape; its options: size, colour"):
        things.create("picky", shape=2)
    assert things.create("picky", colour="blue") == "blue"


def test_models_check_their_options_before_building_anything():
    from metaaugment import TaskSpec

    spec = TaskSpec(num_classes=3, input_shape=(1, 8, 8))
    with pytest.raises(UserError, match="model 'small-cnn': width must be at least 1"):
        MODELS.create("small-cnn", spec, width=0)
