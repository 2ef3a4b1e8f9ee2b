"""The LeMa corrector: its prompt (`prompt`), output parser (`parse`), rule-based reference corrector
and locator (`reference`) and arithmetic claim checker (`claims`). The `correct` stage that runs it
is `lema_hub.correct`."""
