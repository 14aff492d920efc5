#!/usr/bin/env python3
"""Simulated request logs for the context model of `espresso serve` (docs/context_model.md).

The users are SIMULATED: nobody's real requests are in these logs. Each user follows a persona with a
daily routine (a commuter photographs plants and birds in the park in the morning, scans documents at
the office, food at lunch, cars on the way home and pets in the evening; weekends differ), and each
request names the model it needs, with the context a client would send: local time, coarse location,
client app and the classes the user's last requests predicted.

Writes two JSONL files split by days (the first days for training, the last --test-days for testing),
one request a line in time order:
  {"time": "2026-11-02T08:13:05", "location": "park-north", "app": "nature-lens",
   "recent": ["oak", "robin"], "model": "plants", "user": "u07"}

Deterministic for a given --seed. Standard library only.
"""

import argparse
import datetime as dt
import json
import os
import random

# The classes each model answers with (what "recent" carries).
CLASSES = {
    "plants": ["oak", "fern", "rose", "tulip", "maple", "ivy"],
    "birds": ["robin", "sparrow", "crow", "magpie", "heron"],
    "landmarks": ["cathedral", "bridge", "town-hall", "tower", "museum"],
    "food": ["pizza", "salad", "ramen", "curry", "sandwich", "cake"],
    "pets": ["cat", "dog", "hamster", "rabbit"],
    "products": ["shoe", "jacket", "phone", "lamp", "mug"],
    "cars": ["sedan", "hatchback", "van", "suv", "truck"],
    "documents": ["invoice", "receipt", "letter", "form"],
    "digits": [str(d) for d in range(10)],
    "faces": ["smile", "neutral", "surprise"],
}

# An activity: where, with which app, and which models it asks for (weights).
ACTIVITIES = {
    "park": dict(locations=["park-north", "park-south"], app="nature-lens",
                 models={"plants": 0.55, "birds": 0.4, "pets": 0.05}),
    "sightseeing": dict(locations=["old-town", "riverside"], app="city-guide",
                        models={"landmarks": 0.8, "food": 0.1, "birds": 0.1}),
    "office": dict(locations=["business-park", "downtown"], app="scanner",
                   models={"documents": 0.75, "digits": 0.25}),
    "lunch": dict(locations=["downtown", "business-park"], app="food-lens",
                  models={"food": 0.9, "products": 0.1}),
    "commute": dict(locations=["ring-road", "station"], app="car-spotter",
                    models={"cars": 0.85, "faces": 0.15}),
    "shopping": dict(locations=["mall"], app="shop-lens",
                     models={"products": 0.85, "food": 0.15}),
    "home": dict(locations=["home"], app="home-cam",
                 models={"pets": 0.6, "food": 0.25, "faces": 0.15}),
    "school": dict(locations=["campus"], app="scanner",
                   models={"digits": 0.7, "documents": 0.3}),
}

# Personas: (start hour, activity, probability the session happens) for weekdays and weekends.
PERSONAS = {
    "commuter": dict(
        weekday=[(7.5, "park", 0.8), (9.5, "office", 0.9), (12.5, "lunch", 0.8), (17.5, "commute", 0.8),
                 (20.0, "home", 0.8)],
        weekend=[(10.5, "park", 0.7), (15.0, "shopping", 0.5), (19.5, "home", 0.8)]),
    "tourist-guide": dict(
        weekday=[(9.0, "sightseeing", 0.9), (12.0, "lunch", 0.7), (14.5, "sightseeing", 0.8),
                 (21.0, "home", 0.6)],
        weekend=[(10.0, "sightseeing", 0.9), (13.0, "lunch", 0.7), (16.0, "sightseeing", 0.8)]),
    "student": dict(
        weekday=[(8.5, "school", 0.9), (12.0, "lunch", 0.6), (15.5, "school", 0.6), (22.0, "home", 0.7)],
        weekend=[(12.0, "shopping", 0.6), (16.0, "park", 0.4), (21.0, "home", 0.7)]),
    "shopper": dict(
        weekday=[(11.0, "shopping", 0.7), (13.0, "lunch", 0.6), (18.0, "commute", 0.5), (19.0, "home", 0.8)],
        weekend=[(10.0, "shopping", 0.8), (14.0, "sightseeing", 0.4), (18.5, "home", 0.8)]),
}


def pick(rng, weights):
    names = sorted(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


def simulate(users, days, seed, start, noise):
    rng = random.Random(seed)
    people = []
    persona_names = sorted(PERSONAS)
    for u in range(users):
        persona = persona_names[u % len(persona_names)]
        # Each user keeps one location per activity (their park, their office) most days.
        home = {a: rng.choice(spec["locations"]) for a, spec in ACTIVITIES.items()}
        people.append(dict(id="u%02d" % u, persona=persona, places=home, recent=[],
                           shift=rng.uniform(-0.5, 0.5)))
    events = []
    for day in range(days):
        date = start + dt.timedelta(days=day)
        weekend = date.weekday() >= 5
        for person in people:
            routine = PERSONAS[person["persona"]]["weekend" if weekend else "weekday"]
            for hour, activity, chance in routine:
                if rng.random() > chance:
                    continue
                spec = ACTIVITIES[activity]
                location = person["places"][activity] if rng.random() < 0.85 else rng.choice(spec["locations"])
                t = date + dt.timedelta(hours=hour + person["shift"] + rng.gauss(0, 0.4))
                for _ in range(1 + min(6, int(rng.expovariate(1 / 2.5)))):
                    if rng.random() < noise:  # anything, anywhere: the part no model can predict
                        model = rng.choice(sorted(CLASSES))
                    else:
                        model = pick(rng, spec["models"])
                    events.append(dict(time=t, user=person["id"], location=location, app=spec["app"],
                                       model=model, person=person))
                    t += dt.timedelta(seconds=rng.randint(20, 400))
    events.sort(key=lambda e: (e["time"], e["user"]))
    lines = []
    for e in events:
        person = e["person"]
        lines.append(dict(time=e["time"].strftime("%Y-%m-%dT%H:%M:%S"), location=e["location"], app=e["app"],
                          recent=list(person["recent"]), model=e["model"], user=e["user"]))
        # What the model answered, for the user's next request.
        person["recent"] = (person["recent"] + [rng.choice(CLASSES[e["model"]])])[-3:]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--test-days", type=int, default=7, help="the last days, written to test.jsonl")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.1, help="share of requests for a random model")
    parser.add_argument("--start", default="2026-11-02", help="first day (a Monday by default)")
    parser.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl")
    args = parser.parse_args()
    if not 0 < args.test_days < args.days:
        parser.error("--test-days must be between 1 and --days - 1")
    start = dt.datetime.strptime(args.start, "%Y-%m-%d")
    lines = simulate(args.users, args.days, args.seed, start, args.noise)
    split = start + dt.timedelta(days=args.days - args.test_days)
    os.makedirs(args.out, exist_ok=True)
    counts = {}
    for name, keep in (("train", lambda t: t < split), ("test", lambda t: t >= split)):
        path = os.path.join(args.out, name + ".jsonl")
        with open(path, "w") as f:
            n = 0
            for line in lines:
                if keep(dt.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S")):
                    f.write(json.dumps(line, separators=(",", ":")) + "\n")
                    n += 1
        counts[name] = n
    print("simulated %d users over %d days: %d training requests (%d days), %d test requests (%d days) in %s"
          % (args.users, args.days, counts["train"], args.days - args.test_days, counts["test"], args.test_days,
             args.out))


if __name__ == "__main__":
    main()
