"""lema_hub: Learning From Mistakes (LeMa, An et al. 2023) as Hugging Face Hub artifacts."""

__version__ = "0.1.0"

PAPER_URL = "https://arxiv.org/abs/2310.20689"
PAPER_CITATION = """@article{an2023lema,
  title   = {Learning From Mistakes Makes LLM Better Reasoner},
  author  = {An, Shengnan and Ma, Zexiong and Lin, Zeqi and Zheng, Nanning and Lou, Jian-Guang and Chen, Weizhu},
  journal = {arXiv preprint arXiv:2310.20689},
  year    = {2023}
}"""
