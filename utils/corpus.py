"""A seeded, English-like, learnable synthetic corpus in C4's file format.

Run: python -m utils.corpus --dst DIR [--seed 1234] [--train-shards 16] [--valid-shards 2]
     [--docs-per-shard 1300]

The embedded default dataset (utils/smoke.py) is built from this corpus through the same tools as
real C4, so a fresh CPU machine can run the whole pipeline offline. The text comes from a small
probabilistic grammar chosen so that a tiny model has something to learn at several ranges:
- word level: a Zipf-like vocabulary of about 1,000 word forms (nouns, verbs, adjectives, names);
- sentence level: agreement (a/an before vowels, this/these, singular and plural verbs,
  does/do, was/were, number words with plural nouns);
- document level: each document has a topic (which skews its nouns, verbs and adjectives), a
  narrating tense (present or past, kept through the document), a main character whose name and
  pronoun recur, and a home place.

Files: `c4-train.{i:05d}-of-{n:05d}.json.gz` and `c4-validation.{i:05d}-of-{m:05d}.json.gz`, one
JSON object per line `{"text","timestamp","url"}` as in C4 en. Every shard has its own random
stream derived from (seed, split, index), so shards can be generated in any order or in parallel
and the same seed always gives byte-identical files (gzip header time fixed at 0).
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import io
import json
import math
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.errors import command
from utils.fileio import DataError, atomic_output
from utils.progress import Bar, add_flag, check_env

REPO_ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- vocabulary
# Each topic: nouns (singular), verbs (base form, transitive), adjectives, and a place noun.
TOPICS: dict[str, tuple[str, str, str]] = {
    "farming": (
        "farmer field barn tractor seed harvest orchard apple goat sheep fence well plough "
        "meadow crop hen egg pasture wagon stable cow pumpkin ditch shed",
        "plant water harvest feed plough gather sell carry fix count",
        "muddy green ripe tall dry fertile quiet wooden busy early",
    ),
    "sailing": (
        "sailor boat harbor sail mast rope anchor wave island captain deck compass map storm "
        "lighthouse gull tide shore cabin oar net fisherman current reef",
        "steer tie raise lower watch cross reach row mend follow",
        "salty windy calm rough blue distant narrow sturdy bright swift",
    ),
    "cooking": (
        "cook kitchen oven bread soup onion pepper knife spoon bowl recipe garlic butter "
        "flour pan stove dinner sauce carrot cheese plate lemon pot",
        "bake stir chop taste boil slice serve season roast mix",
        "warm fresh spicy sweet golden crisp thick hungry sour tender",
    ),
    "astronomy": (
        "astronomer telescope star planet moon comet orbit galaxy lens observatory eclipse "
        "meteor sky night chart nebula satellite crater horizon signal dome ring",
        "observe measure record track photograph study map predict detect name",
        "dark faint bright cold vast silent ancient clear red remote",
    ),
    "music": (
        "musician song piano violin drum choir melody concert guitar rhythm singer stage "
        "note chord band audience flute trumpet ballad lesson verse tune hall",
        "play sing practice tune compose perform hum teach record repeat",
        "loud soft lively slow joyful gentle famous sharp minor sweet",
    ),
    "trade": (
        "merchant market coin price cart shop ledger cloth spice silk customer bargain "
        "scale crate warehouse road caravan contract profit debt stall basket",
        "buy sell trade weigh pack order pay borrow lend ship",
        "rich busy fair cheap costly honest crowded heavy rare foreign",
    ),
    "forest": (
        "ranger forest tree oak pine trail deer fox owl branch leaf river stream moss "
        "mushroom cabin fire wolf bear path berry hill log",
        "climb explore cut follow guard clear plant hunt cross mark",
        "tall wild thick shady mossy deep cool silent old hidden",
    ),
    "medicine": (
        "doctor nurse patient clinic fever medicine bandage wound cough remedy herb "
        "hospital bed visit pulse illness cure tonic bottle ward injury chart",
        "treat heal examine visit bandage prescribe measure comfort test clean",
        "sick healthy pale careful gentle weak bitter clean kind tired",
    ),
    "building": (
        "builder house wall brick roof beam stone tower bridge window door ladder hammer "
        "nail plan floor chimney arch mortar crane gate column",
        "build raise lay repair paint measure design cut lift finish",
        "solid tall strong straight narrow grand heavy unfinished new broad",
    ),
    "school": (
        "teacher student book lesson class desk pencil question answer library exam page "
        "letter word story map board chalk school essay puzzle rule",
        "read write learn teach answer spell draw solve study copy",
        "clever curious quiet long difficult easy patient bright new careful",
    ),
    "weather": (
        "forecaster cloud rain snow wind storm thunder sun fog frost season valley hail "
        "rainbow breeze flood drought puddle umbrella window roof morning evening",
        "warn expect watch measure feel cover soak shake cool dry",
        "cloudy rainy sunny icy stormy mild humid grey heavy sudden",
    ),
    "mining": (
        "miner mine tunnel lamp cart ore gold silver coal pick shaft rail helmet vein "
        "cave rock dust crystal drill mountain rope lantern",
        "dig carry find break haul light drill sort load search",
        "deep dusty dark narrow rich heavy shiny damp cold rocky",
    ),
}

COMMON_NOUNS = (
    "friend neighbor child family village town day week year morning letter gift road "
    "garden window door table chair cup light story idea plan journey home"
).split()
COMMON_VERBS = "see like want find keep bring show need open share".split()
COMMON_ADJS = "good small large little happy young old long short beautiful".split()

MALE_NAMES = (
    "Tom Arlo Hugo Felix Omar Ivan Liam Noah Oscar Ezra Leo Milo Jonas Rafael Victor Dmitri Kenji Tariq Samuel Marco"
).split()
FEMALE_NAMES = (
    "Anna Clara Ella Ines Maya Nora Ruth Sofia Vera Zoe Lena Iris Hana Amara Leila Greta Priya Yuki Elena Mira"
).split()
PLACES = (
    "Ashford Brookvale Cedarfield Dunmore Elmstead Fairhaven Glenwood Hollowmere Ironbridge "
    "Juniper Kingsley Larkspur Millbrook Northwick Oakridge Pinecrest Queensport Riverton "
    "Stonehill Thornbury Umberley Westmarch Yarrow Zennor"
).split()

NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty".split()
# Irregular forms that a small grammar should still get right.
IRREGULAR_PLURAL = dict(
    pair.split(":")
    for pair in (
        "sheep:sheep deer:deer wolf:wolves leaf:leaves knife:knives shelf:shelves child:children "
        "ore:ore dust:dust fog:fog moss:moss gold:gold silver:silver coal:coal silk:silk cloth:cloth "
        "flour:flour butter:butter garlic:garlic rain:rain snow:snow thunder:thunder hail:hail "
        "frost:frost bread:bread"
    ).split()
)
IRREGULAR_PAST = dict(
    pair.split(":")
    for pair in (
        "sell:sold feed:fed cut:cut find:found dig:dug break:broke bring:brought keep:kept see:saw "
        "build:built lay:laid pay:paid lend:lent buy:bought teach:taught sing:sang read:read "
        "write:wrote draw:drew feel:felt shake:shook light:lit hold:held hum:hummed stir:stirred "
        "chop:chopped plan:planned ship:shipped map:mapped"
    ).split()
)


def plural(noun: str) -> str:
    """English plural by the regular rules, with the irregular table first."""
    if noun in IRREGULAR_PLURAL:
        return IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """Present tense, third person singular."""
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def past(verb: str) -> str:
    """Simple past, irregular table first."""
    if verb in IRREGULAR_PAST:
        return IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def article(word: str) -> str:
    """'an' before a vowel sound (spelling is a good enough proxy for this vocabulary)."""
    return "an" if word[0] in "aeiou" else "a"


def capitalize(s: str) -> str:
    return s[:1].upper() + s[1:]


class Weighted:
    """Zipf-like sampling from a list: frequent words early, a long tail late."""

    def __init__(self, items: list[str], exponent: float = 1.0):
        self.items = items
        acc, self.cum = 0.0, []
        for rank in range(1, len(items) + 1):
            acc += 1.0 / rank**exponent
            self.cum.append(acc)
        self.total = acc

    def pick(self, rng: random.Random) -> str:
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


@dataclass
class _Topic:
    name: str
    nouns: Weighted
    verbs: Weighted
    adjs: Weighted
    agent: str  # the topic's person noun ("farmer", "sailor"), always the first noun


def _build_topics() -> list[_Topic]:
    topics = []
    for name, (nouns, verbs, adjs) in TOPICS.items():
        n = nouns.split()
        # Common words join every topic's lists at the tail, so topics share a background.
        topics.append(
            _Topic(
                name,
                Weighted(n + COMMON_NOUNS, 0.9),
                Weighted(verbs.split() + COMMON_VERBS, 0.8),
                Weighted(adjs.split() + COMMON_ADJS, 0.8),
                n[0],
            )
        )
    return topics


_TOPICS = _build_topics()


class _Doc:
    """State of one document: topic, tense, main character, place. Sentences draw on it."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.topic = _TOPICS[int(rng.random() * len(_TOPICS))]
        self.past = rng.random() < 0.5
        female = rng.random() < 0.5
        names = FEMALE_NAMES if female else MALE_NAMES
        self.name = names[int(rng.random() * len(names))]
        self.pronoun = "she" if female else "he"
        self.possessive = "her" if female else "his"
        self.place = PLACES[int(rng.random() * len(PLACES))]

    # -- phrases
    def noun_phrase(self, plural_: bool, definite_bias: float = 0.5) -> str:
        rng = self.rng
        noun = self.topic.nouns.pick(rng)
        adj = self.topic.adjs.pick(rng) if rng.random() < 0.35 else None
        head = plural(noun) if plural_ else noun
        words = f"{adj} {head}" if adj else head
        r = rng.random()
        if plural_:
            if r < definite_bias:
                det = "the"
            elif r < definite_bias + 0.15:
                det = "these" if rng.random() < 0.5 else "those"
            elif r < definite_bias + 0.3:
                det = NUMBERS[int(rng.random() * len(NUMBERS))]
            else:
                det = "some" if rng.random() < 0.6 else "many"
        else:
            if r < definite_bias:
                det = "the"
            elif r < definite_bias + 0.15:
                det = "this" if rng.random() < 0.5 else "that"
            elif r < definite_bias + 0.22:
                det = self.possessive
            else:
                det = article(words)
        return f"{det} {words}"

    def verb(self, singular: bool) -> str:
        v = self.topic.verbs.pick(self.rng)
        if self.past:
            return past(v)
        return third_person(v) if singular else v

    def be(self, singular: bool) -> str:
        if self.past:
            return "was" if singular else "were"
        return "is" if singular else "are"

    def subject(self) -> tuple[str, bool]:
        """A subject and whether it is singular; the main character recurs often."""
        r = self.rng.random()
        if r < 0.25:
            return self.name, True
        if r < 0.4:
            return self.pronoun, True
        if r < 0.5:
            return f"the {plural(self.topic.agent)}", False
        plural_ = self.rng.random() < 0.4
        return self.noun_phrase(plural_), not plural_

    # -- sentences
    def clause(self) -> str:
        rng = self.rng
        subj, singular = self.subject()
        r = rng.random()
        if r < 0.55:
            obj = self.noun_phrase(rng.random() < 0.4)
            tail = ""
            if rng.random() < 0.3:
                prep = ("in", "near", "behind", "under", "beside")[int(rng.random() * 5)]
                tail = f" {prep} {self.noun_phrase(False, 0.8)}"
            elif rng.random() < 0.15:
                tail = f" in {self.place}"
            return f"{subj} {self.verb(singular)} {obj}{tail}"
        if r < 0.8:
            adj = self.topic.adjs.pick(rng)
            return f"{subj} {self.be(singular)} {adj}"
        if r < 0.9:
            n = int(rng.random() * len(NUMBERS))
            noun = plural(self.topic.nouns.pick(rng))
            return f"{subj} {self.verb(singular)} {NUMBERS[n]} {noun}"
        return f"{subj} {self.verb(singular)} {self.noun_phrase(False)} with {self.noun_phrase(True)}"

    def question(self) -> str:
        subj, singular = self.subject()
        if self.past:
            aux = "did"
        else:
            aux = "does" if singular else "do"
        v = self.topic.verbs.pick(self.rng)
        return f"{capitalize(aux)} {subj} {v} {self.noun_phrase(self.rng.random() < 0.4)}?"

    def sentence(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return capitalize(self.clause()) + "."
        if r < 0.7:
            conj = (", and ", ", but ", " because ", ", so ")[int(rng.random() * 4)]
            return capitalize(self.clause()) + conj + self.clause() + "."
        if r < 0.8:
            when = "When" if rng.random() < 0.5 else "After"
            return f"{when} {self.clause()}, {self.clause()}."
        if r < 0.88:
            return self.question()
        if r < 0.97:
            return f"In {self.place}, {self.clause()}."
        return f"{self.name} {self.be(True)} {article(self.topic.agent)} {self.topic.agent} from {self.place}."

    def opening(self) -> str:
        agent = self.topic.agent
        if self.past:
            return f"{self.name} was {article(agent)} {agent} who lived in {self.place}."
        return f"{self.name} is {article(agent)} {agent} who lives in {self.place}."

    def closing(self) -> str:
        thing = self.topic.nouns.pick(self.rng)
        return f"{capitalize(self.possessive)} {thing} {self.be(True)} never forgotten in {self.place}."


def document(rng: random.Random) -> str:
    """One document: an opening, paragraphs of sentences (joined by newlines as C4 paragraphs
    are), and a closing. Its length in words follows a log-normal (median ~150, tens to hundreds)."""
    doc = _Doc(rng)
    target = min(800, max(20, int(rng.lognormvariate(math.log(150), 0.7))))
    paragraphs, sentences, words = [], [doc.opening()], 0
    words += len(sentences[0].split())
    while words < target:
        s = doc.sentence()
        sentences.append(s)
        words += s.count(" ") + 1
        if len(sentences) >= 3 and rng.random() < 0.2:
            paragraphs.append(" ".join(sentences))
            sentences = []
    sentences.append(doc.closing())
    paragraphs.append(" ".join(sentences))
    return "\n".join(paragraphs)


def _url(rng: random.Random, text: str) -> str:
    site = PLACES[int(rng.random() * len(PLACES))].lower()
    slug = "-".join(w.strip(".,?").lower() for w in text.split()[:5])
    return f"https://www.{site}.example/{int(rng.random() * 9000) + 1000}/{slug}"


def _timestamp(rng: random.Random) -> str:
    day = 18 + int(rng.random() * 9)
    h, m, s = int(rng.random() * 24), int(rng.random() * 60), int(rng.random() * 60)
    return f"2019-04-{day:02d}T{h:02d}:{m:02d}:{s:02d}Z"


def shard_name(split: str, index: int, count: int) -> str:
    """C4's shard file name, e.g. c4-train.00003-of-01024.json.gz."""
    return f"c4-{split}.{index:05d}-of-{count:05d}.json.gz"


def shard_bytes(seed: int, split: str, index: int, n_docs: int) -> bytes:
    """The gzip'd JSON-lines content of one shard, a pure function of its arguments."""
    # A string seed goes through sha512 in `random`, so it is stable across Python versions and
    # independent of PYTHONHASHSEED.
    rng = random.Random(f"c4-synthetic/{seed}/{split}/{index}")
    buf = io.BytesIO()
    # mtime=0 and an empty file name keep the gzip header identical from run to run.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        lines = []
        for _ in range(n_docs):
            text = document(rng)
            rec = {"text": text, "timestamp": _timestamp(rng), "url": _url(rng, text)}
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    return buf.getvalue()


def write_shard(dst: Path, seed: int, split: str, index: int, count: int, n_docs: int) -> Path:
    """Write one shard atomically and return its path."""
    path = Path(dst) / shard_name(split, index, count)
    data = shard_bytes(seed, split, index, n_docs)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def corpus_jobs(
    seed: int, train_shards: int, valid_shards: int, docs_per_shard: int, valid_docs_per_shard: int
) -> list[tuple]:
    """(seed, split, index, count, n_docs) for every shard, train first."""
    jobs = [(seed, "train", i, train_shards, docs_per_shard) for i in range(train_shards)]
    jobs += [(seed, "validation", i, valid_shards, valid_docs_per_shard) for i in range(valid_shards)]
    return jobs


def write_corpus(
    dst: str | Path,
    seed: int = 1234,
    train_shards: int = 16,
    valid_shards: int = 2,
    docs_per_shard: int = 1300,
    valid_docs_per_shard: int | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[Path]:
    """Write the train and validation shards under `dst`; return their paths (train first).

    `workers` > 1 generates every workers-th shard in each of workers-1 child processes
    (`python -m utils.corpus --part K/N`) and the rest here; the bytes do not depend on it.
    Plain child processes rather than multiprocessing: the caller may be a training process
    whose main module is expensive to import again.
    `progress`: a bar on stderr over the shards written (the children's counted as they appear).
    """
    if train_shards < 1 or valid_shards < 1 or docs_per_shard < 1:
        raise DataError("train_shards, valid_shards and docs_per_shard must be at least 1")
    dst = Path(dst).resolve()
    dst.mkdir(parents=True, exist_ok=True)
    jobs = corpus_jobs(seed, train_shards, valid_shards, docs_per_shard, valid_docs_per_shard or docs_per_shard)
    children = []
    for k in range(1, max(1, workers)):
        cmd = [sys.executable, "-m", "utils.corpus", "--dst", str(dst), "--seed", str(seed)]
        cmd += ["--train-shards", str(train_shards), "--valid-shards", str(valid_shards)]
        cmd += ["--docs-per-shard", str(docs_per_shard)]
        cmd += ["--valid-docs-per-shard", str(valid_docs_per_shard or docs_per_shard), "--part", f"{k}/{workers}"]
        children.append(subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    paths = [dst / shard_name(split, i, n) for _, split, i, n, _ in jobs]
    with Bar(len(jobs), "corpus", "shards", enabled=progress) as bar:
        # A shard already there may be an older run's: only those this run renames into place count.
        pending = {p for p in paths if not p.exists()}

        def count_arrived() -> None:
            arrived = {p for p in pending if p.exists()}
            pending.difference_update(arrived)
            bar.update(len(arrived))

        for job in jobs[:: max(1, workers)]:
            write_shard(dst, *job)
            bar.update(1)
            pending.discard(dst / shard_name(job[1], job[2], job[3]))
            count_arrived()
        for child in children:
            _, err = child.communicate()
            if child.returncode:
                raise DataError(f"corpus generation failed in a child process: {err.decode(errors='replace').strip()}")
        bar.update(len(jobs) - bar.n)
    return paths


def _part(value: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected K/N, e.g. 1/2") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{value!r}: need 0 <= K < N")
    return k, n


@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.corpus --dst DIR: write the synthetic C4-format shards."""
    p = argparse.ArgumentParser(
        prog="python -m utils.corpus",
        description="Write a seeded synthetic English-like corpus in C4's shard format "
        "(c4-train.*.json.gz, c4-validation.*.json.gz).",
    )
    p.add_argument("--dst", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=1234, help="same seed, byte-identical files (default 1234)")
    p.add_argument("--train-shards", type=int, default=16, help="number of train shards (default 16)")
    p.add_argument("--valid-shards", type=int, default=2, help="number of validation shards (default 2)")
    p.add_argument("--docs-per-shard", type=int, default=1300, help="documents per train shard (default 1300)")
    p.add_argument("--valid-docs-per-shard", type=int, default=None, help="default: --docs-per-shard")
    p.add_argument("--workers", type=int, default=1, help="processes generating shards (default 1)")
    p.add_argument("--part", type=_part, default=None, help="K/N: write only shards K, K+N, ... (used by --workers)")
    add_flag(p)
    a = p.parse_args(argv)
    try:
        check_env()
        if a.part:
            k, n = a.part
            vdocs = a.valid_docs_per_shard or a.docs_per_shard
            jobs = corpus_jobs(a.seed, a.train_shards, a.valid_shards, a.docs_per_shard, vdocs)
            for job in jobs[k::n]:
                write_shard(a.dst, *job)
            return 0
        paths = write_corpus(
            a.dst,
            a.seed,
            a.train_shards,
            a.valid_shards,
            a.docs_per_shard,
            a.valid_docs_per_shard,
            workers=a.workers,
            progress=not a.no_progress,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} shards to {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
