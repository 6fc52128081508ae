from structures.stack import Stack


def test_push_pop():
    stack = Stack()
    stack.push(1)
    stack.push(2)
    assert stack.pop() == 2


def test_peek_leaves_item():
    stack = Stack()
    stack.push("a")
    assert stack.peek() == "a"
    assert len(stack) == 1
