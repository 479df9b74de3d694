"""A tiny three-intent data set (BANKING77-like) shared by the labelled-file and encoder tests."""

INTENTS = {
    "card_arrival": [
        "my card has not arrived yet",
        "when will my new card come",
        "still waiting for the card in the post",
        "how long does card delivery take",
        "the card you sent never showed up",
        "is my card on its way",
    ],
    "top_up_failed": [
        "my top up did not work",
        "topping up my account failed",
        "the top-up was declined",
        "why did adding money fail",
        "top up keeps failing",
        "could not top up with my card",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "how is the currency rate calculated",
        "rate for euros to pounds",
        "is the exchange rate fair",
        "which conversion rate applies",
        "currency exchange rates today",
    ],
}
