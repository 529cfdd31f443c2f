import numpy as np

from services.labelling.offline import (
    content_words,
    describe_difference,
    generalise,
    label_tree,
    representative_caption,
)
from shared.pipeline.tree import build_tree


def test_representative_caption_is_the_one_nearest_the_centroid():
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    assert representative_caption(["a", "b", "c"], embeddings) == "b"


def test_parent_label_keeps_the_words_most_children_share():
    labels = ["a red circle on sand", "a blue circle on sand", "a green circle on grass"]
    assert generalise(labels, [4, 4, 4]) == "circle sand"
    assert generalise(labels, [1, 1, 10]) == "green circle grass"


def test_parent_label_without_shared_words_names_its_largest_children():
    assert generalise(["a red car", "a small dog"], [3, 3]) == "red car / small dog"


def test_difference_description_is_what_the_child_has_and_the_parent_lacks():
    assert describe_difference("a snowy forest with tall trees", "trees") == "snowy forest tall"
    assert describe_difference("circle sand", "circle sand") is None


def test_content_words_drop_stopwords_and_repeats():
    assert content_words("A dog and a dog on the Grass") == ["dog", "grass"]


def test_a_parent_label_keeps_the_number_its_children_share():
    assert generalise(["a photo of two dogs", "two dogs on a beach"], [3, 2]) == "photo two dogs"


def test_numbers_colours_and_counts_are_content():
    assert content_words("Two red cars and 3 blue bikes in the 1990s, 3rd place, a 2-year-old") == [
        "two",
        "red",
        "cars",
        "3",
        "blue",
        "bikes",
        "1990s",
        "3rd",
        "place",
        "2-year-old",
    ]
    children = ["four white horses in a field", "four brown horses in a field", "one black horse in a field"]
    assert generalise(children, [5, 5, 2]) == "four horses field"
    assert describe_difference(children[2], "four horses field") == "one black horse"
    assert describe_difference("a player wearing number 7", "player wearing number") == "7"
    assert generalise(["a 1 on a red sign", "a 1 on a blue sign"], [2, 2]) == "1 sign"


def test_label_tree_labels_every_cluster_and_describes_children():
    partitions = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
    captions = ["a red circle", "a red circle on sand", "a blue circle", "a blue circle on sand"]
    embeddings = np.eye(4, dtype=np.float32)
    labels = label_tree(build_tree(partitions), captions, embeddings)
    assert labels["L1-0"].label == "a red circle" and labels["L1-0"].difference_description == "red"
    assert labels["L2-0"].label == "circle" and labels["L2-0"].difference_description is None
    assert {lab.source for lab in labels.values()} == {"offline"}
