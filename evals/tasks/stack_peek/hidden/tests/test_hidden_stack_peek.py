import pytest
from structures.stack import Stack


def test_peek_sees_latest_and_empty_raises():
    stack = Stack()
    with pytest.raises(IndexError):
        stack.peek()
    stack.push(1)
    stack.push(2)
    assert stack.peek() == 2
    stack.pop()
    assert stack.peek() == 1
