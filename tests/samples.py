"""Sample texts shared by the generation tests."""

# Real sentences (Lewis Carroll, Alice's Adventures in Wonderland, public domain).
ALICE = [
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.",
    "So she was considering in her own mind whether the pleasure of making a daisy-chain would be worth the "
    "trouble of getting up and picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her.",
    "There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear "
    "the Rabbit say to itself, Oh dear! Oh dear! I shall be late!",
]
