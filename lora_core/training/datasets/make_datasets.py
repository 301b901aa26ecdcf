"""Build LoRA Lab's recommendation dataset, deterministically, from the lists below.

    .venv/bin/python -m lora_core.training.datasets.make_datasets      # rewrites the two .jsonl files

It rebuilds the toy task of the seed document (a "YouTube recommendation" fine-tune of distilgpt2:
"User likes cooking videos." -> "I recommend 'Pasta Tutorial'"), but large enough to measure:
every interest has five video titles, prompts are phrased eight ways, and the held-out interests
(TEST_INTERESTS) never occur in training, so held-out scores measure generalisation, not recall.
The seed's own example pair keeps its roles: cooking is trained on, gaming is held out.

No randomness: the phrasing of each prompt is picked by index, so the output is reviewable and
the same on every machine. The files are committed; this script is how they were made.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent

# Eight ways of saying "this user likes X"; {t} is the interest as it reads before "videos".
PROMPT_TEMPLATES = (
    "User likes {t} videos.",
    "User watches a lot of {t} videos.",
    "User enjoys videos about {t}.",
    "User is subscribed to several {t} channels.",
    "User keeps searching for {t} content.",
    "User just finished three {t} videos in a row.",
    "User's watch history is mostly {t}.",
    "User asked for more {t} videos.",
)
COMPLETION = "I recommend '{title}'"

# interest -> five titles. Titles are invented for this dataset.
INTERESTS: dict[str, tuple[str, ...]] = {
    "cooking": ("Pasta Tutorial", "Knife Skills for Beginners", "One Pan Dinners",
                "How to Make Fresh Ramen", "Perfect Roast Chicken"),
    "baking": ("Sourdough from Scratch", "Easy Chocolate Chip Cookies", "Croissant Lamination Explained",
               "Birthday Cake Decorating", "Why Bread Rises"),
    "gardening": ("Growing Tomatoes on a Balcony", "Composting Basics", "Pruning Fruit Trees",
                  "Raised Bed Garden Build", "Planting Spring Bulbs"),
    "woodworking": ("Build a Simple Bookshelf", "Hand Plane Setup", "Dovetail Joints by Hand",
                    "Finishing Oak with Oil", "Workbench in a Weekend"),
    "astronomy": ("How Black Holes Form", "Finding Saturn in the Night Sky", "Life Cycle of a Star",
                  "Telescope Buying Guide", "The Scale of the Universe"),
    "chess": ("Opening Principles Every Player Should Know", "Endgame Basics", "Famous Chess Blunders",
              "How to Calculate Variations", "Beating the London System"),
    "yoga": ("Morning Yoga Flow", "Yoga for Back Pain", "Sun Salutation Step by Step",
             "Ten Minute Stretch", "Breathing for Relaxation"),
    "running": ("Couch to 5K Plan", "Marathon Training Mistakes", "Better Running Form",
                "Trail Running for Beginners", "How to Pace a 10K"),
    "photography": ("Understanding Aperture", "Golden Hour Portraits", "Composition Rules Explained",
                    "Editing Photos in Lightroom", "Street Photography Tips"),
    "guitar": ("First Chords on Guitar", "Fingerpicking Patterns", "Learn the Pentatonic Scale",
               "Strumming Made Simple", "Changing Guitar Strings"),
    "piano": ("Reading Sheet Music", "Piano Scales Warm Up", "Play Your First Song on Piano",
              "Left Hand Accompaniment Patterns", "Chord Inversions Explained"),
    "home repair": ("Fixing a Leaky Faucet", "Patching Drywall", "Unclogging a Drain",
                    "Replacing a Light Switch", "Silencing a Squeaky Door"),
    "cycling": ("Bike Maintenance Basics", "Fixing a Flat Tire", "Climbing Hills on a Bike",
                "Choosing a Road Bike", "Cycling Through the Alps"),
    "history": ("The Fall of Rome", "Life in a Medieval Village", "The Story of the Printing Press",
                "Ancient Egypt Explained", "The Silk Road"),
    "physics": ("Newton's Laws in Five Minutes", "What Is Quantum Entanglement", "Why the Sky Is Blue",
                "Energy and Work Explained", "How Magnets Work"),
    "programming": ("Python for Absolute Beginners", "Git in Ten Minutes", "How Recursion Works",
                    "Build a Website with HTML", "Debugging Like a Pro"),
    "travel": ("Backpacking Through Japan", "Packing Light for Two Weeks", "Hidden Beaches of Portugal",
               "Budget Travel Tips", "A Week in Iceland"),
    "fitness": ("Full Body Workout at Home", "Beginner Strength Training", "How to Do a Proper Squat",
                "Twenty Minute HIIT", "Building a Weekly Routine"),
    "painting": ("Watercolor Landscapes", "Acrylic Pouring for Beginners", "Color Mixing Basics",
                 "Painting Skies and Clouds", "Oil Painting Techniques"),
    "knitting": ("Knit Your First Scarf", "Casting On for Beginners", "Reading Knitting Patterns",
                 "Cable Knit Explained", "Fixing Dropped Stitches"),
    "cars": ("How an Engine Works", "Changing Your Own Oil", "Classic Car Restoration",
             "Electric Cars Explained", "Detailing a Car Interior"),
    "birdwatching": ("Identifying Backyard Birds", "Choosing Binoculars", "Bird Songs of the Forest",
                     "Owls at Night", "Spring Bird Migration"),
    "fishing": ("Fly Fishing Basics", "Tying Fishing Knots", "Catching Trout in Streams",
                "Ice Fishing Adventure", "Choosing the Right Lure"),
    "camping": ("Setting Up a Tent in the Rain", "Campfire Cooking", "Ultralight Camping Gear",
                "Winter Camping Tips", "Choosing a Campsite"),
    "dance": ("Salsa Basics", "Hip Hop Choreography for Beginners", "Learn to Waltz",
              "Tap Dance Fundamentals", "Improve Your Rhythm"),
    "math": ("Understanding Fractions", "Why Calculus Works", "Prime Numbers Explained",
             "Probability Puzzles", "The Beauty of Geometry"),
    "languages": ("Learn Spanish Greetings", "Common French Phrases", "How to Memorize Vocabulary",
                  "Japanese Writing Systems", "Speaking with Confidence"),
    "pets": ("Training Your Puppy", "Cat Behavior Explained", "Setting Up an Aquarium",
             "Caring for a Rabbit", "Healthy Food for Dogs"),
    "architecture": ("Gothic Cathedrals Explained", "Modern Houses Tour", "How Skyscrapers Stand Up",
                     "Japanese Temple Design", "Bridges of the World"),
    "economics": ("Inflation Explained", "Supply and Demand Basics", "How Banks Create Money",
                  "The Great Depression", "Why Prices Change"),
    "skateboarding": ("Learn to Ollie", "Skatepark Etiquette", "Kickflip Tutorial",
                      "Choosing Your First Skateboard", "Dropping In Safely"),
    "swimming": ("Freestyle Technique", "Breathing While Swimming", "Learning the Butterfly Stroke",
                 "Open Water Swimming", "Flip Turns Made Easy"),
    "meditation": ("Guided Meditation for Sleep", "Mindfulness in Ten Minutes", "Body Scan Practice",
                   "Meditation for Beginners", "Calm Breathing Exercise"),
    "interior design": ("Small Apartment Makeover", "Choosing a Color Palette", "Lighting a Living Room",
                        "Scandinavian Style Explained", "Decorating on a Budget"),
    "origami": ("Fold a Paper Crane", "Origami Flowers", "Modular Origami Ball",
                "Paper Airplane That Flies Far", "Origami Animals for Kids"),
    "magic tricks": ("Easy Card Tricks", "Coin Vanish Tutorial", "Mind Reading Trick Revealed",
                     "Sleight of Hand Basics", "Magic with Rubber Bands"),
    "coffee": ("Brewing the Perfect Pour Over", "Espresso at Home", "Latte Art for Beginners",
               "Cold Brew Recipe", "Choosing Coffee Beans"),
    "climbing": ("Bouldering for Beginners", "Climbing Knots Explained", "Improving Finger Strength",
                 "First Time Outdoor Climbing", "Reading a Climbing Route"),
    "biology": ("How Cells Divide", "The Human Immune System", "Evolution Explained",
                "Inside the Human Heart", "How Plants Make Food"),
    "film": ("How Movies Are Edited", "Famous Film Openings", "Lighting a Film Scene",
             "Writing a Short Film", "The History of Animation"),
    "surfing": ("Catching Your First Wave", "Reading Ocean Swells", "Surfboard Buying Guide",
                "Pop Up Technique", "Surf Trip to Bali"),
    "calligraphy": ("Brush Lettering Basics", "Modern Calligraphy Alphabet", "Choosing Calligraphy Pens",
                    "Gothic Script Tutorial", "Lettering for Cards"),
    "personal finance": ("Budgeting for Beginners", "How Index Funds Work", "Paying Off Debt",
                         "Saving for Retirement", "Understanding Credit Scores"),
    "drawing": ("Drawing Faces Step by Step", "Perspective Drawing Basics", "Shading with Pencil",
                "Sketching People Quickly", "Drawing Hands Made Easy"),
    # --- held out below (see TEST_INTERESTS); the seed's own eval input is "gaming" ---
    "gaming": ("Top Ten Indie Games", "Speedrun Strategies", "Building a Gaming PC",
               "Retro Game Collection Tour", "Best Co-op Games"),
    "hiking": ("Hiking Gear Essentials", "Best Day Hikes in the Alps", "Navigating with a Map",
               "Hiking Safety Tips", "Summit Sunrise Hike"),
    "jazz": ("Introduction to Jazz Standards", "Jazz Improvisation Basics", "The History of Bebop",
             "Walking Bass Lines", "Great Jazz Albums"),
    "pottery": ("Throwing Your First Bowl", "Glazing Techniques", "Centering Clay on the Wheel",
                "Hand Building a Mug", "Firing a Kiln"),
    "robotics": ("Build a Line Following Robot", "Servo Motors Explained", "Robot Arm from Scratch",
                 "Sensors for Beginners", "Programming a Robot"),
    "soccer": ("Dribbling Drills", "How to Take a Penalty", "Soccer Tactics Explained",
               "Improve Your First Touch", "Greatest Goals of All Time"),
    "sewing": ("Sewing Machine Basics", "Make a Tote Bag", "Hemming Pants by Hand",
               "Reading Sewing Patterns", "Sew a Simple Dress"),
    "chemistry": ("The Periodic Table Explained", "Acids and Bases", "Colorful Chemical Reactions",
                  "How Batteries Work", "Chemistry of Cooking"),
    "beekeeping": ("Starting Your First Hive", "Harvesting Honey", "Inspecting a Beehive",
                   "Bees Through the Seasons", "Protecting Bees from Pests"),
    "board games": ("Best Strategy Board Games", "How to Play Catan", "Board Games for Two",
                    "Cooperative Board Games", "Designing Your Own Board Game"),
    "sailing": ("Sailing Terms for Beginners", "Tacking and Jibing", "Tying Sailing Knots",
                "Crossing the Atlantic", "Reading the Wind"),
    "archery": ("Archery Form Basics", "Choosing Your First Bow", "Aiming Without a Sight",
                "Making Wooden Arrows", "Field Archery Course Walkthrough"),
}

# Held out: these interests appear only in the test split.
TEST_INTERESTS = ("gaming", "hiking", "jazz", "pottery", "robotics", "soccer",
                  "sewing", "chemistry", "beekeeping", "board games", "sailing", "archery")


def pairs_for(interests: list[str], offset: int = 0) -> list[dict[str, str]]:
    """One pair per (interest, title); the template cycles so no prompt repeats."""
    rows = []
    for i, interest in enumerate(interests):
        for j, title in enumerate(INTERESTS[interest]):
            template = PROMPT_TEMPLATES[(i + offset + j) % len(PROMPT_TEMPLATES)]
            rows.append({"prompt": template.format(t=interest), "completion": COMPLETION.format(title=title)})
    return rows


def build() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, test rows) of the recommendation dataset."""
    train_interests = [k for k in INTERESTS if k not in TEST_INTERESTS]
    return pairs_for(train_interests), pairs_for(list(TEST_INTERESTS), offset=len(train_interests))


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    missing = set(TEST_INTERESTS) - set(INTERESTS)
    if missing:
        raise ValueError(f"TEST_INTERESTS names unknown interests: {sorted(missing)}")
    train, test = build()
    write_jsonl(HERE / "recommendations.train.jsonl", train)
    write_jsonl(HERE / "recommendations.test.jsonl", test)
    print(f"recommendations: {len(train)} train, {len(test)} test pairs")


if __name__ == "__main__":
    main()
