r"""The 24 story prompts of Eldan & Li, continued by two (or more) trained models, side by side.

    python -m mosaics_jax.evaluate.story_prompts --run=/tmp/quickstart:mosaic \
        --run=/tmp/quickstart:transformer --output=/tmp/quickstart/prompts

The prompts are those of the TinyStories paper (Eldan & Li 2023, arXiv 2305.07759, Figures 9-11:
factual knowledge 1-9, reasoning 10-18, context tracking 19-24), which the v1 Memory Mosaics
paper uses for its generation comparison (Table 4). Continuations are greedy (as in TinyStories)
and stop at the end-of-text token. Writes ``story_prompts.md``.
"""

from __future__ import annotations

import sys

import jax
from absl import flags

from mosaics_jax import generate
from mosaics_jax.evaluate import command

PROMPTS = (
    # Factual knowledge.
    "Alice was so tired when she got back home so she went",
    'Jack and Lily saw a rainbow after a rainy day. They were amazed by the colors. Jack said, '
    '"Look, Lily. A rainbow has',
    "Jack and Lily liked to watch the moon at night. They noticed that the moon changed its shape "
    "every night. Sometimes the moon was big and round, and sometimes it was",
    "Jack wanted to read a book, so he went to",
    '"Can cows fly?", Alice asked her mother.',
    '"What do birds like to eat?", Tom asked his mother.',
    '"What language do they speak in France?", Tom asked his mother',
    "If I throw a ball up in the air, eventually it will",
    'It was winter and cold outside so his mother told him, "You should',
    # Reasoning.
    "Lily likes cats and dogs. She asked her mom for a dog and her mom said no, so instead she "
    "asked",
    'Jack told Mary, "If you give me your banana, I\'ll give you my apple". Mary gave Jack her '
    "Banana so",
    "On weekends Jack went to visit his grandmother whereas on weekdays he would go to school. "
    "Last weekend, when Jack was on his way to",
    "Lily and Ben were having an argument. Ben said that cake is much better than ice cream and "
    "Lily said that",
    "Lily and Ben are having an argument. They are trying to decide between the park and the "
    'swimming pool. Ben says, "I want to go to the park". Lily says',
    "Jack's mother was not home, and his father was at home. When Jack came home, he said hello "
    "to",
    "Lily doesn't like swimming. When her father wants to take her to the swimming pool, she says",
    "Both Ben and Lily wanted cake. Father said that there was only one piece of cake left. They",
    "Ben went to visit Lily in her house, but she was not at home. Ben knocked on the door,",
    # Context tracking.
    '"Hi Jane, have you seen Alice? I can\'t find her anywhere", said Jack.',
    "Max had two dogs. One was white and the other was black. Max walked up the street and saw a "
    'kid with a dog. He told the kid, "I see you have a Brown dog. I also have',
    "Anne had a piece of candy in her left pocket and a piece of chocolate in her right pocket. "
    'Anne\'s mom asked her, "Anne, what is that you have in your left pocket?"',
    "Alice had both an apple and a carrot in her bag. She took the apple out of the bag and gave "
    "it to Jack. She reached into the bag again and took",
    "Alice and Jack walked up the street and met a girl in a red dress. The girl said to them, "
    '"Hi, I\'m Jane. What are your names?"',
    "Diva was hungry, and wanted to bake a cake, but she didn't have any sugar at home, so she "
    "decided to go ask around. She started walking and met a squirrel. She asked the squirrel, "
    '"Would you happen',
)


def continue_prompts(run, prompts=PROMPTS, max_new_tokens: int = 40, mesh=None) -> list[str]:
  """Greedy continuations of the prompts by a loaded run (``checkpoint.load_run``, its
  parameters on ``mesh`` if given)."""
  tokenizer = run.tokenizer
  encoded = [[tokenizer.eot_id] + ids for ids in tokenizer.encode(list(prompts))]
  outputs = generate.sample(run.model, run.params, encoded, max_new_tokens=max_new_tokens,
                            rng=jax.random.key(0), temperature=0.0, mesh=mesh)
  texts = []
  for tokens in outputs:
    if tokenizer.eot_id in tokens:
      tokens = tokens[:tokens.index(tokenizer.eot_id)]
    texts.append(tokenizer.decode(tokens))
  return texts


def markdown_table(prompts, columns: dict[str, list[str]]) -> str:
  """One row per prompt, one column per model."""
  clean = lambda text: " ".join(text.split()).replace("|", "\\|")
  lines = ["| # | prompt | " + " | ".join(clean(name) for name in columns) + " |",
           "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
  for i, prompt in enumerate(prompts):
    cells = [clean(columns[name][i]) for name in columns]
    lines.append(f"| {i + 1} | {clean(prompt)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="story_prompts",
                        run_help="WORKDIR:MODEL, once per column (two or more).")
  flags.DEFINE_integer("tokens", 40, "Tokens generated per prompt.", flag_values=values)


def run(values) -> str:
  """Write story_prompts.md to ``--output``; the table."""
  mesh = command.mesh(values)
  columns = {}
  for _, name, run in command.load_runs(values, reading="the prompts", on=mesh):
    columns[f"{name} (step {run.step})"] = continue_prompts(run, max_new_tokens=values.tokens,
                                                            mesh=mesh)
  table = markdown_table(PROMPTS, columns)
  command.Output(values.output).write_text(
      "story_prompts.md", "# Story prompts\n\nGreedy continuations of the 24 prompts of Eldan "
      "& Li (2023), factual (1-9), reasoning (10-18) and context-tracking (19-24).\n\n" + table)
  print(table)
  return table


if __name__ == "__main__":
  command.main(sys.modules[__name__])
