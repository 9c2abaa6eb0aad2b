"""Word vectors without TensorFlow: the PPMI-SVD maths and the vector-file reader."""

import numpy as np
import pytest

from rnncli.core.errors import DataError
from rnncli.training.vectors import learn_vectors, read_vectors


def test_words_in_the_same_contexts_get_similar_vectors():
    rng = np.random.default_rng(0)
    # ids 2,3 always appear next to 10-19; ids 4,5 next to 20-29
    rows = []
    for _ in range(400):
        a, b = rng.choice([2, 3]), rng.choice([4, 5])
        rows.append([a, rng.integers(10, 20), 0, 0])
        rows.append([b, rng.integers(20, 30), 0, 0])
    v = learn_vectors([np.array(rows[:300]), np.array(rows[300:])], vocab_size=30, dim=4,
                      window=1, flush_pairs=100)  # several flushes

    def cos(x, y):
        return x @ y / np.linalg.norm(x) / np.linalg.norm(y)

    assert v.shape == (30, 4) and v.dtype == np.float32
    assert cos(v[2], v[3]) > 0.9 and cos(v[4], v[5]) > 0.9
    assert cos(v[2], v[4]) < 0.5
    assert not v[:2].any()  # padding and [UNK] keep their random start


def test_only_the_most_frequent_words_are_learned(monkeypatch):
    import rnncli.training.vectors as vectors

    monkeypatch.setattr(vectors, "LEARN_WORDS", 6)
    monkeypatch.setattr(vectors, "CONTEXTS", 4)
    rows = np.array([[2, 3, 4, 5, 6, 7, 8, 9]] * 20)
    v = vectors.learn_vectors([rows], vocab_size=10, dim=2, window=2)
    assert v.shape == (10, 2) and v[2:6].any() and not v[6:].any()


def test_read_vectors_glove_and_word2vec_header(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("2 3\ngood 1 2 3\nbad -1 -2 -3\n")
    matrix, found = read_vectors(path, ["bad", "unknown", "good"])
    assert found.tolist() == [True, False, True]
    assert matrix[2].tolist() == [1, 2, 3] and matrix[1].tolist() == [0, 0, 0]


def test_words_with_spaces_as_in_glove_840b(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("good 1 2\n. . . 3 4\n")
    matrix, found = read_vectors(path, [". . .", "good"])
    assert found.all() and matrix[0].tolist() == [3, 4]


@pytest.mark.parametrize("content, words", [
    (b"good 1 2\nbad 1\n", "line 2"),
    (b"good x y\n", "not a vector"),
    (b"good nan 1\n", "NaN"),
    (b"", "no vectors"),
    (b"3 2\n\xff\xfe\x00binary", "not UTF-8"),
    (b"\x1f\x8b\x08truncated", "cannot be read"),
])
def test_bad_vector_files(tmp_path, content, words):
    path = tmp_path / "v.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words):
        read_vectors(path, ["good"])
