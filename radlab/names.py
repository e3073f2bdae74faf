"""Names in params, checked against what radlab has: one place, above the registries.

The params dataclasses (:mod:`radlab.params`) check values and their combinations, and import no
loader, reward or analysis code.  The names that only those know are checked here, when
:func:`radlab.config.validate` resolves params (before any heavy work):

* data: ``source`` / ``sources`` (loader names, item keys, loader options:
  :func:`radlab.data.sources.source_list`) and ``resize_mode`` (:data:`radlab.data.images.RESIZE_MODES`);
* GRPO: ``reward_names`` (reward names and options against :data:`radlab.rewards.FACTORIES`; each item
  becomes its canonical text, ``f1radgraph:level=complete``) and ``annotator``;
* analysis: ``annotator``, the forms of ``comparisons`` and ``model_dirs`` (:mod:`radlab.experiment`).

Every error is a :class:`~radlab.vocab.ParamError` naming the parameter.
"""

from __future__ import annotations

from typing import Any

from radlab.clinical.backends import ANNOTATOR_BACKENDS
from radlab.params import AnalysisParams, DataParams, GRPOParams
from radlab.vocab import ParamError, parse_items


def check_names(params: Any, *, check_inputs: bool = True) -> None:
    """Check the names ``params`` (a stage's params dataclass) give; raise :class:`ParamError`.

    GRPO's ``reward_names`` are replaced by their canonical items.  ``check_inputs=False`` (params
    of a cluster whose files are not here) skips building each reward, which may need an annotator
    backend installed.
    """
    if isinstance(params, DataParams):
        _check_data(params)
    elif isinstance(params, GRPOParams):
        _check_annotator(params.annotator)
        params.reward_names = reward_items(params.reward_names, build=check_inputs)
    elif isinstance(params, AnalysisParams):
        from radlab.experiment import parse_comparisons, parse_model_dirs

        parse_model_dirs(params.model_dirs)
        parse_comparisons(params.comparisons)  # the form here; the names once the models are found
        _check_annotator(params.annotator)


def _check_annotator(annotator: str) -> None:
    if annotator not in ANNOTATOR_BACKENDS:
        raise ParamError(f"parameter 'annotator': {annotator!r} not in {ANNOTATOR_BACKENDS}")


def _check_data(params: DataParams) -> None:
    from radlab.data import sources
    from radlab.data.images import RESIZE_MODES

    if params.resize_mode not in RESIZE_MODES:
        raise ParamError(f"parameter 'resize_mode': {params.resize_mode!r} not in {RESIZE_MODES}")
    sources.source_list(params)  # parse errors now, before any heavy work


def reward_items(names: str | list[str], *, build: bool = True) -> list[str]:
    """``reward_names`` parsed (``name:key=value`` items), checked against each reward's
    constructor, as canonical item texts: ``"f1radgraph:level=complete, bleu"`` ->
    ``["f1radgraph:level=complete", "bleu"]``.  ``build`` also constructs each reward (its
    constructor checks the values, and an annotator backend's availability)."""
    from radlab.rewards import FACTORIES, check_reward_options, reward_item

    out = []
    try:
        items = parse_items(names)
    except ParamError as exc:
        raise ParamError(f"parameter 'reward_names': {exc}") from exc
    for name, options in items:
        if name not in FACTORIES:
            raise ParamError(f"parameter 'reward_names': unknown reward {name!r}; available: {sorted(FACTORIES)}")
        try:
            options = check_reward_options(name, options)
        except ValueError as exc:
            raise ParamError(f"parameter 'reward_names': {exc}") from exc
        if build:
            try:
                FACTORIES[name](**options)
            except Exception as exc:
                raise ParamError(f"parameter 'reward_names': reward {name!r}: {exc}") from exc
        out.append(reward_item(name, options))
    return out
