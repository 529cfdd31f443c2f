import numpy as np

from services.labelling.offline import (
    content_words,
    describe_difference,
    generalise,
    label_tree,
    representative_caption,
)
from shared.tree import build_tree


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


def test_label_tree_labels_every_cluster_and_describes_children():
    partitions = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
    captions = ["a red circle", "a red circle on sand", "a blue circle", "a blue circle on sand"]
    embeddings = np.eye(4, dtype=np.float32)
    labels = label_tree(build_tree(partitions), captions, embeddings)
    assert labels["L1-0"].label == "a red circle" and labels["L1-0"].difference_description == "red"
    assert labels["L2-0"].label == "circle" and labels["L2-0"].difference_description is None
    assert {lab.source for lab in labels.values()} == {"offline"}
