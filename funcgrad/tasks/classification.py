"""Question-type classification in the TREC style (6 coarse labels), generated offline.

A question is labelled by the type of its *answer*: "Who wrote Hamlet?" → HUMAN,
"When was Mozart born?" → NUMERIC (a date), "What does NASA stand for?" →
ABBREVIATION, but "What is NASA?" → DESCRIPTION. Many templates are confusable on
purpose: the surface words point to one label and the answer type to another
(:attr:`QuestionTemplate.near` names the tempting wrong label).

Pipeline: LLM node ``classify`` (instruction, fixed label list, output format) → fn
node ``parse`` returning ``{"label": str | None, "raw": text}`` (label-set-aware, see
:func:`funcgrad.tasks.parsing.parse_label`); loss :class:`~funcgrad.tasks.parsing.LabelLoss`,
whose feedback names the confusion ("wrong: answered LOCATION, expected HUMAN; ...").

>>> q = classification_question(random.Random(0))
>>> q.label in LABELS and q.question.endswith("?")
True
>>> classification(n_train=2, n_val=2, n_test=2, labels=["HUMAN", "LOCATION"]).test[0].target in ("HUMAN", "LOCATION")
True
"""

from __future__ import annotations

import random

import attrs

from funcgrad.core.errors import ConfigError
from funcgrad.core.nodes import LLM, Var, fn
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import LabelLoss, label_set, make_splits, parse_label

LABELS = ("ABBREVIATION", "DESCRIPTION", "ENTITY", "HUMAN", "LOCATION", "NUMERIC")
MEANING = {
    "ABBREVIATION": "the answer is an abbreviation or what one stands for",
    "DESCRIPTION": "the answer is a definition, description, reason or manner",
    "ENTITY": "the answer is a thing: an animal, colour, language, food, invention, sport, instrument, term, ...",
    "HUMAN": "the answer is a person or a group of people (a company, a team, a band)",
    "LOCATION": "the answer is a place: a city, country, river, mountain, ...",
    "NUMERIC": "the answer is a number: a count, date, year, distance, price, duration, temperature, ...",
}

PERSONS = ("Marie Curie", "Isaac Newton", "Ada Lovelace", "Mozart", "Frida Kahlo", "Nikola Tesla", "Jane Austen",
           "Albert Einstein", "Leonardo da Vinci", "Charles Darwin", "Cleopatra", "Galileo", "Beethoven", "Gandhi")
COUNTRIES = ("France", "Japan", "Brazil", "Egypt", "Canada", "Kenya", "Norway", "India", "Peru", "Australia",
             "Mexico", "Italy", "Vietnam", "Chile")
CITIES = ("Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Sydney", "Rome", "Toronto", "Nairobi", "Mumbai", "Lisbon", "Prague")
ACRONYMS = ("NASA", "UNESCO", "DNA", "GPS", "NATO", "HTML", "RAM", "UFO", "LED", "PDF", "URL", "ATM", "SCUBA",
            "LASER", "RADAR", "CPU", "FIFA", "OPEC")
LONG_NAMES = ("the United Nations", "kilogram", "Doctor of Philosophy", "Fahrenheit", "the European Union",
              "the World Health Organization", "miles per hour", "Bachelor of Arts", "as soon as possible",
              "Central Processing Unit", "post meridiem", "Saint")
CONCEPTS = ("photosynthesis", "inflation", "a black hole", "democracy", "a sonnet", "osmosis", "gravity",
            "a haiku", "the greenhouse effect", "a vaccine", "an eclipse", "erosion", "a tsunami", "a mortgage")
WORDS = ("serendipity", "ubiquitous", "nostalgia", "ephemeral", "karma", "déjà vu", "quorum", "tundra",
         "filibuster", "algorithm", "placebo", "mirage")
WHY = ("the sky blue", "the sea salty", "ice slippery", "the moon visible during the day", "gold so valuable",
       "bread mouldy after a week", "the Earth round", "rust red")
HOW_WORK = ("a compass", "a vaccine", "a refrigerator", "a rainbow", "an airplane wing", "a battery",
            "a microwave oven", "a thermometer", "a solar panel", "a parachute")
HOW_DO = ("tie a bowline knot", "make sourdough bread", "say thank you in Japanese", "change a flat tire",
          "grow tomatoes", "remove a wine stain", "train a puppy", "brew green tea")
INVENTIONS = ("telephone", "light bulb", "printing press", "telescope", "steam engine", "radio", "bicycle",
              "World Wide Web", "dynamite", "microscope", "airplane", "barometer")
BOOKS = ("Hamlet", "Pride and Prejudice", "War and Peace", "Don Quixote", "The Odyssey", "Moby-Dick",
         "One Hundred Years of Solitude", "Frankenstein", "The Divine Comedy", "Things Fall Apart")
PRODUCTS = ("iPhone", "PlayStation", "Walkman", "Model T", "Kindle", "Windows operating system", "Big Mac", "Coca-Cola")
TOURNAMENTS = ("World Cup", "Super Bowl", "Tour de France team prize", "Champions League", "Stanley Cup", "World Series")
YEARS = tuple(range(1950, 2021, 3))
FIRSTS = ("walk on the Moon", "climb Mount Everest", "fly across the Atlantic alone", "reach the South Pole",
          "win two Nobel prizes", "sail around the world", "travel into space", "swim the English Channel")
LANDMARKS = ("the Eiffel Tower", "Machu Picchu", "the Taj Mahal", "the Great Barrier Reef", "Mount Kilimanjaro",
             "the Colosseum", "Angkor Wat", "the Golden Gate Bridge", "Stonehenge", "the Acropolis", "Petra")
EVENTS = ("the first modern Olympic Games", "the signing of the Magna Carta", "the Battle of Hastings",
          "the fall of the Berlin Wall", "the first Moon landing", "the Treaty of Versailles")
CONTINENTS = ("Africa", "Europe", "Asia", "South America", "North America", "Australia")
ANIMALS = ("kangaroo", "goose", "horse", "owl", "cat", "whale", "deer", "frog", "swan", "bear")
CLASSES = ("bird", "fish", "land animal", "snake", "insect", "mammal", "dinosaur", "spider")
THINGS = ("a ruby", "chlorophyll", "the flag of Japan", "a school bus in America", "a flamingo", "copper", "saffron")
INSTRUMENT_PLAYERS = ("Jimi Hendrix", "Louis Armstrong", "Yo-Yo Ma", "Miles Davis", "Ringo Starr", "Chopin")
UNITS = (("centimetres", "metre"), ("ounces", "pound"), ("days", "leap year"), ("seconds", "hour"),
         ("feet", "mile"), ("millilitres", "litre"), ("minutes", "day"), ("grams", "kilogram"))
SUBSTANCES = ("water", "iron", "ethanol", "mercury", "olive oil", "gold", "nitrogen")
ITEMS = ("a first-class stamp in the UK", "a cup of coffee in Paris", "a ticket to the Louvre",
         "a gallon of milk", "a Big Mac in Tokyo", "a new Kindle")
DURATIONS = ("boil an egg", "fly from Paris to Tokyo", "digest a meal", "walk the Great Wall of China",
             "grow an oak tree", "learn to play the piano")
DISCOVERIES = ("penicillin", "radium", "the electron", "DNA's double helix", "gravity", "X-rays", "insulin")
PIECES = ("the Moonlight Sonata", "The Four Seasons", "the Ode to Joy", "Swan Lake", "The Magic Flute", "Bolero")


@attrs.frozen
class QuestionTemplate:
    """A question pattern: ``text`` with ``{a}`` (and ``{b}``) slots filled from ``fillers``; ``near`` is the
    label its surface words tempt a classifier towards ("" when none)."""

    label: str
    text: str
    fillers: tuple = attrs.field(converter=tuple)
    near: str = ""


T = QuestionTemplate
TEMPLATES: tuple[QuestionTemplate, ...] = (
    T("ABBREVIATION", "What does {a} stand for?", ACRONYMS, near="DESCRIPTION"),
    T("ABBREVIATION", "What is the abbreviation for {a}?", LONG_NAMES),
    T("ABBREVIATION", "What is the full form of {a}?", ACRONYMS, near="DESCRIPTION"),
    T("ABBREVIATION", "What is {a} short for?", ACRONYMS, near="DESCRIPTION"),
    T("DESCRIPTION", "What is {a}?", CONCEPTS, near="ENTITY"),
    T("DESCRIPTION", "What is {a}?", ACRONYMS, near="ABBREVIATION"),
    T("DESCRIPTION", "What does {a} mean?", WORDS, near="ABBREVIATION"),
    T("DESCRIPTION", "Why is {a}?", WHY),
    T("DESCRIPTION", "How does {a} work?", HOW_WORK),
    T("DESCRIPTION", "How do you {a}?", HOW_DO, near="NUMERIC"),
    T("DESCRIPTION", "What is the difference between {a} and {b}?", CONCEPTS, near="ENTITY"),
    T("DESCRIPTION", "Why did {a} become famous?", PERSONS, near="HUMAN"),
    T("ENTITY", "What did {a} invent?", PERSONS, near="HUMAN"),
    T("ENTITY", "What instrument did {a} play?", INSTRUMENT_PLAYERS, near="HUMAN"),
    T("ENTITY", "What language is spoken in {a}?", COUNTRIES, near="LOCATION"),
    T("ENTITY", "What currency is used in {a}?", COUNTRIES, near="LOCATION"),
    T("ENTITY", "What food is {a} famous for?", CITIES, near="LOCATION"),
    T("ENTITY", "What colour is {a}?", THINGS, near="DESCRIPTION"),
    T("ENTITY", "What do you call a baby {a}?", ANIMALS, near="DESCRIPTION"),
    T("ENTITY", "What is the fastest {a}?", CLASSES),
    T("ENTITY", "What disease did {a} study?", PERSONS, near="HUMAN"),
    T("ENTITY", "What is the national sport of {a}?", COUNTRIES, near="LOCATION"),
    T("HUMAN", "Who invented the {a}?", INVENTIONS, near="ENTITY"),
    T("HUMAN", "Who wrote {a}?", BOOKS),
    T("HUMAN", "What company makes the {a}?", PRODUCTS, near="ENTITY"),
    T("HUMAN", "Which team won the {a} in {b}?", TOURNAMENTS, near="NUMERIC"),
    T("HUMAN", "Who was the first person to {a}?", FIRSTS),
    T("HUMAN", "What is the name of the scientist who discovered {a}?", DISCOVERIES, near="ENTITY"),
    T("HUMAN", "Which composer wrote {a}?", PIECES, near="ENTITY"),
    T("HUMAN", "Who is the head of state of {a}?", COUNTRIES, near="LOCATION"),
    T("LOCATION", "What is the capital of {a}?", COUNTRIES),
    T("LOCATION", "Where is {a}?", LANDMARKS),
    T("LOCATION", "Which country is {a} in?", CITIES),
    T("LOCATION", "What river flows through {a}?", CITIES, near="ENTITY"),
    T("LOCATION", "In which city was {a} born?", PERSONS, near="HUMAN"),
    T("LOCATION", "What is the highest mountain in {a}?", CONTINENTS, near="NUMERIC"),
    T("LOCATION", "Where did {a} take place?", EVENTS),
    T("LOCATION", "Which country makes the {a}?", PRODUCTS, near="HUMAN"),
    T("NUMERIC", "How many {a} are in a {b}?", UNITS),
    T("NUMERIC", "When was {a} born?", PERSONS, near="LOCATION"),
    T("NUMERIC", "What year did {a} happen?", EVENTS, near="DESCRIPTION"),
    T("NUMERIC", "How far is {a} from {b}?", CITIES, near="LOCATION"),
    T("NUMERIC", "What is the population of {a}?", COUNTRIES, near="LOCATION"),
    T("NUMERIC", "How tall is {a}?", LANDMARKS, near="DESCRIPTION"),
    T("NUMERIC", "How much does {a} cost?", ITEMS),
    T("NUMERIC", "How long does it take to {a}?", DURATIONS, near="DESCRIPTION"),
    T("NUMERIC", "What is the boiling point of {a}?", SUBSTANCES, near="ENTITY"),
    T("NUMERIC", "How old was {a} when they died?", PERSONS, near="HUMAN"),
)


@attrs.frozen
class Question:
    """A generated question with its label, the template it came from and the tempting wrong label."""

    question: str
    label: str
    template: str
    near: str


def _fill(template: QuestionTemplate, rng: random.Random) -> str:
    if "{b}" not in template.text:
        return template.text.format(a=rng.choice(template.fillers))
    if template.label == "HUMAN":  # "Which team won the {tournament} in {year}?"
        return template.text.format(a=rng.choice(template.fillers), b=rng.choice(YEARS))
    first = rng.choice(template.fillers)
    if isinstance(first, tuple):  # "How many {small unit} are in a {big unit}?"
        return template.text.format(a=first[0], b=first[1])
    return template.text.format(a=first, b=rng.choice([f for f in template.fillers if f != first]))


def classification_question(rng: random.Random, labels: tuple[str, ...] = LABELS) -> Question:
    """One question: a label drawn uniformly from ``labels``, then one of that label's templates."""
    label = rng.choice(labels)
    template = rng.choice([t for t in TEMPLATES if t.label == label])
    return Question(_fill(template, rng), label, template.text, template.near)


INSTRUCTION = "Classify the question."
FORMAT = "Reply with the label only."

classify_node = LLM("classify", system=("classify_system",), user="{question}", max_tokens=48)


def _labels(labels) -> tuple[str, ...]:
    labels = label_set(labels, where="classification labels")
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        raise ConfigError(f"classification labels {unknown} are not known; choose from {', '.join(LABELS)}")
    return labels


def labels_param(labels: tuple[str, ...] = LABELS) -> Param:
    """The frozen param listing the allowed labels, as a node's system prompt shows them.

    >>> labels_param(("HUMAN", "LOCATION")).value
    'Labels: HUMAN, LOCATION.'
    """
    return Param("Labels: " + ", ".join(labels) + ".", role="the fixed list of allowed labels", trainable=False, kind="other")


def initial_state(labels: tuple[str, ...] = LABELS) -> PromptState:
    """Plain starting prompts: an instruction, the fixed label list and an output-format peer."""
    return with_demos(PromptState(
        params={
            "classify_instruction": Param(
                INSTRUCTION,
                role=(
                    "system instruction of the 'classify' LLM node, which gets one question and must name the type "
                    "of the answer the question asks for (not the topic of the question)"
                ),
                kind="instruction",
            ),
            "classify_labels": labels_param(labels),
            "classify_format": Param(
                FORMAT,
                role=(
                    "output-format rule of the 'classify' node; a parser takes the one label named in the reply "
                    "(a reply naming several labels counts as wrong), and the reply is cut at 48 tokens"
                ),
                kind="format",
            ),
        },
        groups={"classify_system": ("classify_instruction", "classify_labels", "classify_format")},
    ), {"classify_system": "classify"})


def classification(
    *, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50, labels: tuple[str, ...] = LABELS,
) -> Task:
    """The question-type task: seeded disjoint splits over ``labels`` (a subset of :data:`LABELS`, no duplicates).

    The task declares ``labels`` (:attr:`~funcgrad.core.task.Task.labels`), so a
    proposed instruction may name a class ("a question about a city is LOCATION")
    without the ``label_leak`` guard dropping it.
    """
    labels = _labels(labels)

    @fn("parse")
    def parse(text):
        """The one label named in the model's reply (None if none or several) plus the raw text."""
        raw = "" if text is None else str(text)
        return {"label": parse_label(raw, labels), "raw": raw[:400]}

    def pipeline(prompts: PromptState, x: Var) -> Var:
        """classify (LLM) → parse (fn)."""
        return parse(classify_node(prompts, question=x))

    def generate(rng: random.Random) -> tuple[str, str]:
        q = classification_question(rng, labels)
        return q.question, q.label

    train, val, test = make_splits("classification", seed, generate, n_train, n_val, n_test)
    return Task(
        name="classification",
        pipeline=pipeline,
        state=initial_state(labels),
        loss=LabelLoss(labels),
        train=train,
        val=val,
        test=test,
        description=(
            "TREC-style question classification: name the type of the answer a question asks for, one of "
            + ", ".join(labels) + "."
        ),
        labels=labels,
    )
