"""The built-in demo set: synthetic image-text pairs, generated on the fly, whose label needs both modalities.

As in real posts, the sentiment sits in one modality and the other is neutral: in half of the pairs the text
carries the label (a cue word of its class, fruit names, two per class, among 0 to 39 filler words) and the image
is neutral (grey, with a rectangle of a random class colour); in the other half the image carries it (a noisy
picture of the class colour, with a smaller rectangle of another colour) and the text holds a neutral cue word.
The pairs cycle through the six (label, carrier) combinations, so a model reading one modality alone can reach
at best 2/3 accuracy (right where that modality carries the label, chance elsewhere); both together determine it.
"""

import numpy as np
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from transformers import BertTokenizerFast

from .readers import LoadedData


DEMO_LABEL_NAMES = ["positive", "neutral", "negative"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_CLASS_WORDS = (("apple", "cherry"), ("banana", "lemon"), ("grape", "plum"))
NEUTRAL_WORDS = ("stone", "paper")
FILLER_WORDS = (
    "the a of and to in is it that was for on with as at by this from we they be are have not but or an so if "
    "my our your their very just all some more one two new old big small"
).split()
DEMO_VOCAB = SPECIAL_TOKENS + [word for words in TEXT_CLASS_WORDS for word in words] + list(NEUTRAL_WORDS) + FILLER_WORDS
DEMO_VOCAB_SIZE = len(DEMO_VOCAB)
DEMO_MAX_WORDS = 40
# [CLS] and [SEP] come on top of the words; every demo word is one token.
DEMO_MAX_TOKENS = DEMO_MAX_WORDS + 2
IMAGE_CLASS_COLOURS = np.array([[200, 40, 40], [40, 180, 40], [40, 60, 200]], dtype=np.float32)
NEUTRAL_COLOUR = np.array([128, 128, 128], dtype=np.float32)
NUM_CLASSES = 3
CARRIERS = ("text", "image")
COLOUR_JITTER = 30.0
PIXEL_NOISE = 20.0
DEMO_IMAGE_SIZE = 32


def build_demo_tokenizer() -> BertTokenizerFast:
    """A lowercasing word-level BERT tokenizer over the demo words (`DEMO_VOCAB_SIZE` tokens), built offline."""
    return BertTokenizerFast(vocab={word: index for index, word in enumerate(DEMO_VOCAB)}, do_lower_case=True)


def demo_text(text_class: int | None, rng: np.random.Generator) -> str:
    """A cue word of `text_class` (a neutral word for None) at a random position among 0 to DEMO_MAX_WORDS - 1
    filler words."""
    words = list(rng.choice(FILLER_WORDS, size=int(rng.integers(0, DEMO_MAX_WORDS))))
    choices = NEUTRAL_WORDS if text_class is None else TEXT_CLASS_WORDS[text_class]
    cue = choices[int(rng.integers(len(choices)))]
    words.insert(int(rng.integers(len(words) + 1)), cue)
    return " ".join(words)


def demo_image(image_class: int | None, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    """A `size` x `size` image of the class colour (grey for None), jittered and noisy, partly covered by a
    rectangle of another class colour (at most a quarter of the area, so the dominant colour stays dominant)."""
    base = NEUTRAL_COLOUR if image_class is None else IMAGE_CLASS_COLOURS[image_class]
    pixels = base + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3) + rng.normal(0.0, PIXEL_NOISE, size=(size, size, 3))
    shift = int(rng.integers(0 if image_class is None else 1, NUM_CLASSES))
    other = IMAGE_CLASS_COLOURS[((image_class or 0) + shift) % NUM_CLASSES]
    height, width = (int(rng.integers(max(1, size // 4), size // 2 + 1)) for _ in range(2))
    top, left = int(rng.integers(size - height + 1)), int(rng.integers(size - width + 1))
    pixels[top : top + height, left : left + width] = other
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def demo_split(name: str, count: int, rng: np.random.Generator, image_size: int) -> Dataset:
    """`count` pairs whose (label, carrier) cycle through all six combinations in shuffled order."""
    combinations = rng.permutation(np.arange(count) % (NUM_CLASSES * len(CARRIERS)))
    labels, carriers = combinations % NUM_CLASSES, [CARRIERS[c] for c in combinations // NUM_CLASSES]
    features = Features({"id": Value("string"), "text": Value("string"), "image": Image(), "label": ClassLabel(names=DEMO_LABEL_NAMES)})
    return Dataset.from_dict(
        {
            "id": [f"demo-{name}-{index:05d}" for index in range(count)],
            "text": [demo_text(int(y) if c == "text" else None, rng) for y, c in zip(labels, carriers)],
            "image": [demo_image(int(y) if c == "image" else None, rng, image_size) for y, c in zip(labels, carriers)],
            "label": [int(y) for y in labels],
        },
        features=features,
    )


def make_demo_dataset(num_train: int = 1800, num_validation: int = 360, num_test: int = 360, seed: int = 0, image_size: int = DEMO_IMAGE_SIZE) -> DatasetDict:
    """The demo splits (a split of size 0 is left out), the same for the same arguments. Each split draws from its
    own generator, so changing one split's size leaves the others unchanged."""
    if image_size < 4:
        raise ValueError(f"image_size must be at least 4, got {image_size}")
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    return DatasetDict(
        {
            name: demo_split(name, count, np.random.default_rng([seed, index]), image_size)
            for index, (name, count) in enumerate(sizes.items())
            if count > 0
        }
    )


def load_demo_data(num_train: int = 1800, num_validation: int = 360, num_test: int = 360, seed: int = 0, image_size: int = DEMO_IMAGE_SIZE) -> LoadedData:
    """The demo set in the readers' `LoadedData` form (splits, label names, report)."""
    splits = make_demo_dataset(num_train, num_validation, num_test, seed, image_size)
    report = {"source": "demo", "missing_image": "error", "text_only": False, "rows": {name: len(part) for name, part in splits.items()},
              "skipped": dict.fromkeys(splits, 0), "blanked": dict.fromkeys(splits, 0), "undecodable_files": []}
    return LoadedData(splits, list(DEMO_LABEL_NAMES), report)
