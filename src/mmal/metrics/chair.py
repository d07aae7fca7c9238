"""CHAIR hallucination metrics with exact ground truth (002 §5.4.1; Rohrbach et al. 2018).

On generated scenes (``tuxpaint-scenes``) every image's object set is known and every
object has one word, so object mentions are found by exact word match; nothing is
estimated (no synonym lists, no parser).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mmal.errors import ConfigError


def mentioned_objects(words: Sequence[str], object_words: Iterable[str]) -> list[str]:
    """Object words in a caption, in order, with repeats (one entry per mention)."""
    vocab = set(object_words)
    return [w for w in words if w in vocab]


def chair(captions: Sequence[Sequence[str]], ground_truth: Sequence[Iterable[str]], object_words: Iterable[str]) -> dict:
    """CHAIR_S, CHAIR_I, recall and length of generated captions.

    Parameters
    ----------
    captions : one list of words per image (EOS and specials already removed).
    ground_truth : the objects present in each image.
    object_words : the object vocabulary (a mention is a word in this set).

    Returns
    -------
    dict with, over the ``n`` captions:

    - ``chair_s``: fraction of captions that mention at least one object not in the image
      (Rohrbach et al.'s CHAIR_S);
    - ``chair_i``: hallucinated mentions / all object mentions, counting every mention
      (a repeated word counts each time, as the reference CHAIR code does); 0 when nothing
      is mentioned;
    - ``recall``: sum over images of |distinct mentioned objects in the image| / sum of
      |objects in the image| (micro average, as the CHAIR code used by OPERA/EOS does);
    - ``length``: mean caption length in words;
    - ``n``, ``mentions``, ``hallucinated``: the counts behind them.

    Values are fractions in [0, 1] (tables print them x100, like the thesis).
    """
    if len(captions) != len(ground_truth):
        raise ConfigError(f"chair: {len(captions)} captions but {len(ground_truth)} ground-truth object sets")
    if not captions:
        raise ConfigError("chair: no captions to score")
    vocab = set(object_words)
    n_bad = mentions = halluc = covered = total_gt = words = 0
    for cap, gt in zip(captions, ground_truth):
        gt = set(gt)
        ment = mentioned_objects(cap, vocab)
        bad = [m for m in ment if m not in gt]
        n_bad += bool(bad)
        mentions += len(ment)
        halluc += len(bad)
        covered += len(set(ment) & gt)
        total_gt += len(gt)
        words += len(cap)
    n = len(captions)
    return {"chair_s": n_bad / n, "chair_i": halluc / mentions if mentions else 0.0,
            "recall": covered / total_gt if total_gt else 0.0, "length": words / n,
            "n": n, "mentions": mentions, "hallucinated": halluc}


__all__ = ["chair", "mentioned_objects"]
