"""`TrainingArguments` fields that a mixin of `SppSclTrainer` acts on in the Trainer's stead (`save_total_limit` in
`checkpoints`, `push_to_hub` in `hub_push`): the value set moves to `sppscl_<field>`, and the Trainer sees a value
that keeps it from acting on its own."""


def taken_over(field: str, setter: str, trainer_value) -> type:
    """A mixin for a `TrainingArguments` subclass: after `__post_init__` and after the public `setter` (which sets
    `field` again: `set_save`, `set_push_to_hub`), `field`'s value is in `sppscl_<field>` and `field` is
    `trainer_value`."""

    def move(args) -> None:
        setattr(args, f"sppscl_{field}", getattr(args, field))
        setattr(args, field, trainer_value)

    class TakenOver:
        def __post_init__(self):
            super().__post_init__()
            move(self)

    def set_then_move(self, *args, **kwargs):
        getattr(super(TakenOver, self), setter)(*args, **kwargs)
        move(self)
        return self

    setattr(TakenOver, setter, set_then_move)
    TakenOver.__name__ = TakenOver.__qualname__ = f"TakenOver_{field}"
    return TakenOver
