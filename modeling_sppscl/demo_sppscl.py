"""The built-in demo set: synthetic image-text pairs, generated on the fly, whose label needs both modalities.

Each text hides a cue word of a text class `a` (fruit names, two per class) among 0 to 39 filler words; each
image is a noisy picture of dominant colour `b` (red, green or blue, jittered, with a smaller rectangle of another
colour on top). The label is `(a + b) mod 3`. The pairs cycle through all nine (a, b) combinations, so within
every text class and within every image class each label is equally frequent: text alone or image alone is at
chance (1/3), both together determine the label.
"""

import numpy as np
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from transformers import BertTokenizerFast

from modeling_sppscl.data_sppscl import LoadedData


DEMO_LABEL_NAMES = ["positive", "neutral", "negative"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_CLASS_WORDS = (("apple", "cherry"), ("banana", "lemon"), ("grape", "plum"))
FILLER_WORDS = (
    "the a of and to in is it that was for on with as at by this from we they be are have not but or an so if "
    "my our your their very just all some more one two new old big small"
).split()
DEMO_VOCAB = SPECIAL_TOKENS + [word for words in TEXT_CLASS_WORDS for word in words] + FILLER_WORDS
DEMO_VOCAB_SIZE = len(DEMO_VOCAB)
DEMO_MAX_WORDS = 40
# [CLS] and [SEP] come on top of the words; every demo word is one token.
DEMO_MAX_TOKENS = DEMO_MAX_WORDS + 2
IMAGE_CLASS_COLOURS = np.array([[200, 40, 40], [40, 180, 40], [40, 60, 200]], dtype=np.float32)
NUM_CLASSES = 3
COLOUR_JITTER = 30.0
PIXEL_NOISE = 20.0


def build_demo_tokenizer() -> BertTokenizerFast:
    """A lowercasing word-level BERT tokenizer over the demo words (`DEMO_VOCAB_SIZE` tokens), built offline."""
    return BertTokenizerFast(vocab={word: index for index, word in enumerate(DEMO_VOCAB)}, do_lower_case=True)


def demo_text(text_class: int, rng: np.random.Generator) -> str:
    """A cue word of `text_class` placed at a random position among 0 to DEMO_MAX_WORDS - 1 filler words."""
    words = list(rng.choice(FILLER_WORDS, size=int(rng.integers(0, DEMO_MAX_WORDS))))
    cue = TEXT_CLASS_WORDS[text_class][int(rng.integers(len(TEXT_CLASS_WORDS[text_class])))]
    words.insert(int(rng.integers(len(words) + 1)), cue)
    return " ".join(words)


def demo_image(image_class: int, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    """A `size` x `size` image of the class colour, jittered and noisy, partly covered by a rectangle of another
    colour (at most a quarter of the area, so the class colour stays dominant)."""
    colour = IMAGE_CLASS_COLOURS[image_class] + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    pixels = colour + rng.normal(0.0, PIXEL_NOISE, size=(size, size, 3))
    other = IMAGE_CLASS_COLOURS[(image_class + int(rng.integers(1, NUM_CLASSES))) % NUM_CLASSES]
    height, width = (int(rng.integers(max(1, size // 4), size // 2 + 1)) for _ in range(2))
    top, left = int(rng.integers(size - height + 1)), int(rng.integers(size - width + 1))
    pixels[top : top + height, left : left + width] = other
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def demo_split(name: str, count: int, rng: np.random.Generator, image_size: int) -> Dataset:
    """`count` pairs whose (text class, image class) cycle through all nine combinations in shuffled order."""
    combinations = rng.permutation(np.arange(count) % (NUM_CLASSES * NUM_CLASSES))
    text_classes, image_classes = combinations // NUM_CLASSES, combinations % NUM_CLASSES
    features = Features({"id": Value("string"), "text": Value("string"), "image": Image(), "label": ClassLabel(names=DEMO_LABEL_NAMES)})
    return Dataset.from_dict(
        {
            "id": [f"demo-{name}-{index:05d}" for index in range(count)],
            "text": [demo_text(int(a), rng) for a in text_classes],
            "image": [demo_image(int(b), rng, image_size) for b in image_classes],
            "label": [int(a + b) % NUM_CLASSES for a, b in zip(text_classes, image_classes)],
        },
        features=features,
    )


def make_demo_dataset(num_train: int = 1800, num_validation: int = 360, num_test: int = 360, seed: int = 0, image_size: int = 32) -> DatasetDict:
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


def load_demo_data(num_train: int = 1800, num_validation: int = 360, num_test: int = 360, seed: int = 0, image_size: int = 32) -> LoadedData:
    """The demo set in the readers' `LoadedData` form (splits, label names, report)."""
    splits = make_demo_dataset(num_train, num_validation, num_test, seed, image_size)
    report = {"source": "demo", "missing_image": "error", "text_only": False, "rows": {name: len(part) for name, part in splits.items()},
              "skipped": dict.fromkeys(splits, 0), "blanked": dict.fromkeys(splits, 0), "undecodable_files": []}
    return LoadedData(splits, list(DEMO_LABEL_NAMES), report)
