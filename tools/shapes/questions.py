"""tools/shapes/questions.py — questions with exact answers, and captions, from a scene.

    all_questions(scene)      every question whose answer is unambiguous in the scene:
                              [{"type", "question", "answer", "variants": [phrasings]}]
    pick_questions(scene)     at most one question per type, chosen by the scene seed
                              (what manifests and held-out evaluation use)
    caption(scene)            the reference caption (deterministic)
    caption_prompt(kind)      "Describe the image." / "Describe the video."

Types and their answer sets (answers are always one of these strings):
    colour      "What colour is the circle?"            -> a colour name (scene.COLOURS)
    shape       "What shape is the blue object?"        -> a shape name (scene.SHAPES)
    count       "How many shapes are there?",
                "How many red shapes are there?",
                "How many circles are there?"           -> "0".."5"
    direction   "Which way does the green square move?" -> left / right / up / down
    moves       "Which shape moves?"                    -> "the <colour> <shape>"
    appears     "What appears?"                         -> "a <colour> <shape>" ("an orange ...")
    disappears  "What disappears?"                      -> "the <colour> <shape>"

When a question is asked (ground truth from scene.py):
    colour      exactly one object has that shape;  shape: exactly one has that colour;
    count       total: nothing appears or disappears; by colour / shape: none of the
                counted objects appears or disappears (absent ones give "0");
    direction   the object moves and does not bounce between the first and last sampled frame;
    moves       exactly one object moves;  appears / disappears: exactly one object does.
The first phrasing in "variants" is the canonical question; training also uses the others.
"""

import numpy as np

from . import scene as scn

Q_TYPES = ["colour", "shape", "count", "direction", "moves", "appears", "disappears"]

_PHRASES = {
    "colour": ["What colour is the {shape}?", "What color is the {shape}?", "Which colour is the {shape}?"],
    "shape": ["What shape is the {colour} object?", "What shape is the {colour} one?",
              "Which shape is {colour}?"],
    "count_all": ["How many shapes are there?", "How many objects are there?",
                  "How many shapes are in the {medium}?"],
    "count_colour": ["How many {colour} shapes are there?", "How many {colour} objects are there?"],
    "count_shape": ["How many {plural} are there?", "How many {plural} are in the {medium}?"],
    "direction": ["Which way does the {colour} {shape} move?",
                  "In which direction does the {colour} {shape} move?",
                  "Where does the {colour} {shape} move?"],
    "moves": ["Which shape moves?", "What moves?", "Which object moves?"],
    "appears": ["What appears?", "Which shape appears?"],
    "disappears": ["What disappears?", "Which shape disappears?"],
}
_CAPTION_PROMPTS = {
    "image": ["Describe the image.", "What is in the image?", "Describe the picture."],
    "video": ["Describe the video.", "What happens in the video?", "Describe what happens."],
}


def caption_prompt(kind):
    return _CAPTION_PROMPTS[kind][0]


def caption_prompts(kind):
    return list(_CAPTION_PROMPTS[kind])


def _q(qtype, key, answer, **fields):
    variants = [p.format(**fields) for p in _PHRASES[key]]
    return {"type": qtype, "question": variants[0], "answer": answer, "variants": variants}


def article(words):
    """"a red circle" / "an orange star"."""
    return ("an " if words[0] in "aeiou" else "a ") + words


def _has_event(o):
    return o["appear"] > 0 or o["disappear"] is not None


def all_questions(scene):
    objs = scene["objects"]
    medium = scene["kind"]
    out = []
    # colour of the only <shape>
    for s in scn.SHAPES:
        match = [o for o in objs if o["shape"] == s]
        if len(match) == 1:
            out.append(_q("colour", "colour", match[0]["colour"], shape=s))
    # shape of the only <colour> object
    for c in scn.COLOUR_NAMES:
        match = [o for o in objs if o["colour"] == c]
        if len(match) == 1:
            out.append(_q("shape", "shape", match[0]["shape"], colour=c))
    # counts
    if not any(_has_event(o) for o in objs):
        out.append(_q("count", "count_all", str(len(objs)), medium=medium))
    for c in scn.COLOUR_NAMES:
        match = [o for o in objs if o["colour"] == c]
        if not any(_has_event(o) for o in match):
            out.append(_q("count", "count_colour", str(len(match)), colour=c))
    for s in scn.SHAPES:
        match = [o for o in objs if o["shape"] == s]
        if not any(_has_event(o) for o in match):
            out.append(_q("count", "count_shape", str(len(match)), plural=scn.PLURAL[s], medium=medium))
    if scene["kind"] == "video":
        movers = [o for o in objs if o["axis"] is not None]
        for o in movers:
            if scn.bounces(scene, o) == 0:
                out.append(_q("direction", "direction", scn.direction(o), colour=o["colour"], shape=o["shape"]))
        if len(movers) == 1:
            out.append(_q("moves", "moves", "the " + scn.name(movers[0])))
        app = [o for o in objs if o["appear"] > 0]
        if len(app) == 1:
            out.append(_q("appears", "appears", article(scn.name(app[0]))))
        dis = [o for o in objs if o["disappear"] is not None]
        if len(dis) == 1:
            out.append(_q("disappears", "disappears", "the " + scn.name(dis[0])))
    return out


def by_type(questions):
    groups = {}
    for q in questions:
        groups.setdefault(q["type"], []).append(q)
    return groups


def _count_pool(qs):
    """Count questions worth testing: all non-zero ones plus at most two zero ones."""
    nz = [q for q in qs if q["answer"] != "0"]
    zero = [q for q in qs if q["answer"] == "0"]
    return nz + (zero[:1] + zero[-1:] if len(zero) > 1 else zero)


def pick_questions(scene):
    """At most one question per type (canonical phrasing, no variants), by the scene seed."""
    rng = np.random.default_rng([scene["seed"], 7, 0 if scene["kind"] == "image" else 1])
    groups = by_type(all_questions(scene))
    out = []
    for t in Q_TYPES:
        pool = groups.get(t, [])
        if t == "count":
            pool = _count_pool(pool)
            # the total count (answers 1..5) half of the time when it can be asked
            if pool and pool[0]["question"] == _PHRASES["count_all"][0] and rng.random() < 0.5:
                pool = pool[:1]
        if pool:
            q = pool[int(rng.integers(len(pool)))]
            out.append({"type": t, "question": q["question"], "answer": q["answer"]})
    return out


def _sentence_start(s):
    return s[0].upper() + s[1:]


def _first_x(scene, o):
    f = next((f for f in scene["sample_idx"] if scn.visible(o, f)), 0)
    return float(scn.position(scene, o, f)[0])


def caption(scene):
    """Images: the shapes left to right ("A red circle, a blue star and a green square.").
    Videos: one sentence per shape, movers first, then those that appear, disappear, stay
    ("A red circle moves left. A blue star appears. A green square stays still.")."""
    objs = scene["objects"]
    if scene["kind"] == "image":
        names = [article(scn.name(o)) for o in sorted(objs, key=lambda o: (o["x0"], o["y0"]))]
        text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return _sentence_start(text) + "."
    groups = [[], [], [], []]
    for o in objs:
        if o["axis"] is not None:
            phrase = "moves " + scn.direction(o) + (" and bounces back" if scn.bounces(scene, o) else "")
            groups[0].append((o, phrase))
        elif o["appear"] > 0:
            groups[1].append((o, "appears"))
        elif o["disappear"] is not None:
            groups[2].append((o, "disappears"))
        else:
            groups[3].append((o, "stays still"))
    sentences = []
    for g in groups:
        for o, phrase in sorted(g, key=lambda t: _first_x(scene, t[0])):
            sentences.append(_sentence_start(article(scn.name(o))) + f" {phrase}.")
    return " ".join(sentences)


def answer_sets():
    """Every answer string each question type can have (for checks and the tokenizer corpus)."""
    names = [f"{c} {s}" for c in scn.COLOUR_NAMES for s in scn.SHAPES]
    return {
        "colour": list(scn.COLOUR_NAMES),
        "shape": list(scn.SHAPES),
        "count": [str(i) for i in range(6)],
        "direction": list(scn.DIRECTIONS),
        "moves": ["the " + n for n in names],
        "appears": [article(n) for n in names],
        "disappears": ["the " + n for n in names],
    }
