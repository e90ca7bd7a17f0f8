"""Titles and descriptions of simulated items: real English words themed by the item's topic, with noise.

Why: content models (feedloop.content) need text that carries the hidden topic the way real item text
does — mostly, not exactly. Each item's words come from its topic's vocabulary, with some words of
another topic and generic filler mixed in, so an embedding model can recover the topic from the text
while the ids reveal nothing. Every item's text is a function of its id and topic alone (seeded by
them), so it is the same in every run and a growing catalog never changes the text of older items.
"""

from __future__ import annotations

import random
from itertools import combinations

THEMES: tuple[tuple[str, ...], ...] = (
    ("football", "goal", "striker", "league", "match", "stadium", "coach", "tournament", "referee", "championship",
     "defender", "penalty", "season", "trophy", "athletes", "training", "kickoff", "derby", "fans", "victory"),
    ("guitar", "album", "concert", "melody", "singer", "band", "drummer", "chorus", "lyrics", "festival",
     "orchestra", "piano", "rhythm", "songwriter", "vinyl", "jazz", "tour", "record", "acoustic", "symphony"),
    ("recipe", "kitchen", "baking", "pasta", "flavor", "chef", "dessert", "soup", "spices", "bread",
     "vegetables", "dinner", "oven", "sauce", "chocolate", "breakfast", "grill", "salad", "cheese", "noodles"),
    ("software", "programming", "computer", "algorithm", "database", "developer", "code", "server", "laptop",
     "processor", "internet", "app", "cloud", "network", "encryption", "robot", "chip", "startup", "python", "data"),
    ("travel", "beach", "island", "flight", "hotel", "passport", "luggage", "adventure", "mountains", "tourist",
     "cruise", "backpacking", "resort", "airport", "destination", "map", "hiking", "coast", "village", "journey"),
    ("stocks", "market", "investor", "economy", "inflation", "bank", "budget", "savings", "dividend", "interest",
     "mortgage", "portfolio", "trading", "taxes", "profit", "currency", "loan", "wealth", "earnings", "retirement"),
    ("workout", "fitness", "nutrition", "yoga", "running", "muscles", "sleep", "diet", "protein", "stretching",
     "cardio", "wellness", "vitamins", "gym", "marathon", "health", "meditation", "calories", "strength", "recovery"),
    ("movie", "film", "actor", "director", "cinema", "screenplay", "premiere", "trailer", "sequel", "hollywood",
     "actress", "drama", "comedy", "scene", "oscar", "documentary", "animation", "studio", "cast", "thriller"),
    ("planet", "galaxy", "astronomy", "telescope", "rocket", "astronaut", "orbit", "physics", "chemistry",
     "experiment", "laboratory", "molecule", "scientist", "research", "universe", "comet", "gravity", "atoms",
     "biology", "genetics"),
    ("garden", "flowers", "plants", "seeds", "soil", "roses", "tomatoes", "compost", "greenhouse", "watering",
     "pruning", "trees", "lawn", "harvest", "orchids", "shrubs", "blossom", "herbs", "tulips", "weeds"),
    ("painting", "museum", "gallery", "sculpture", "artist", "canvas", "portrait", "exhibition", "drawing",
     "watercolor", "sketch", "ceramics", "brushes", "masterpiece", "mural", "photography", "illustration",
     "curator", "easel", "pottery"),
    ("car", "engine", "motorcycle", "driver", "highway", "tires", "electric", "racing", "truck", "brakes",
     "horsepower", "sedan", "garage", "fuel", "steering", "dealership", "suv", "mechanic", "transmission",
     "roadtrip"),
    ("puppy", "dog", "cat", "kitten", "pets", "veterinarian", "leash", "aquarium", "parrot", "hamster",
     "grooming", "breed", "rescue", "adoption", "paws", "fur", "kennel", "rabbit", "treats", "shelter"),
    ("election", "parliament", "senator", "policy", "government", "campaign", "voters", "democracy", "minister",
     "legislation", "president", "debate", "congress", "ballot", "diplomacy", "reform", "constitution",
     "politics", "mayor", "treaty"),
    ("fashion", "dress", "shoes", "jacket", "style", "designer", "runway", "jewelry", "handbag", "fabric",
     "makeup", "outfit", "sneakers", "boutique", "denim", "silk", "wardrobe", "cosmetics", "perfume", "model"),
    ("videogame", "console", "gamer", "multiplayer", "controller", "quest", "level", "esports", "playstation",
     "nintendo", "arcade", "streamer", "boss", "dungeon", "gameplay", "xbox", "puzzle", "rpg", "speedrun", "pixel"),
)
FILLER = ("the", "a", "new", "best", "guide", "today", "why", "how", "your", "week", "story", "look", "inside",
          "top", "first", "simple", "great", "more", "ideas", "notes", "this", "every", "real", "small", "big",
          "after", "before", "with", "for", "about", "and", "of", "our", "things", "everyone", "really", "still")

_PAIRS = tuple(combinations(range(len(THEMES)), 2))
DISTINCT_TOPICS = len(THEMES) + len(_PAIRS)  # topics beyond this reuse a vocabulary (then not recoverable)
TITLE_WORDS = (3, 6)            # words in a title, inclusive
DESCRIPTION_WORDS = (14, 24)    # words in a description, inclusive
THEME_SHARE = 0.6               # of a description's words, the topic's own; OTHER_TOPIC_SHARE another topic's;
OTHER_TOPIC_SHARE = 0.15        # the rest generic filler. A title is mostly the topic's, a word of noise at most


def topic_words(topic: int) -> tuple[str, ...]:
    """A topic's vocabulary: its own theme, or (topics past the themes) the words of a pair of themes."""
    slot = topic % DISTINCT_TOPICS
    if slot < len(THEMES):
        return THEMES[slot]
    first, second = _PAIRS[slot - len(THEMES)]
    return THEMES[first] + THEMES[second]


def item_text(key: str, topic: int, n_topics: int) -> tuple[str, str]:
    """(title, description) of the item `key` (its id) on `topic`, one of `n_topics`; the same for the same inputs."""
    rng = random.Random(f"{key}/{topic}")
    own = topic_words(topic)
    others = [t for t in range(n_topics) if t != topic]

    def noise() -> str:
        if others and rng.random() < OTHER_TOPIC_SHARE / (1 - THEME_SHARE):
            return rng.choice(topic_words(rng.choice(others)))
        return rng.choice(FILLER)

    title = [rng.choice(own) for _ in range(rng.randint(*TITLE_WORDS))]
    if rng.random() < 0.5:
        title[rng.randrange(len(title))] = noise()
    words = [rng.choice(own) if rng.random() < THEME_SHARE else noise()
             for _ in range(rng.randint(*DESCRIPTION_WORDS))]
    description = " ".join(words).capitalize() + "."
    return " ".join(w.capitalize() for w in title), description
