"""`rag eval`: how well `rag` retrieves and answers, measured on standard benchmark files; the `rag eval`
commands (rag/cli/eval.py) are a thin shell over the functions re-exported here.

Retrieval (`retrieval.py`): a BEIR folder, or a question-answering file (CMRC2018, SQuAD) turned into a retrieval
set, is ingested through the normal ingest path (`corpus.py`), every query is asked of `RAG.retriever`, chunk
hits are rolled up to documents (a document ranks where its best chunk ranks) and the run is scored with
trec_eval (`metrics.py`: nDCG@10, Recall@10, Recall@100, MRR@10, hit@1).

Answering (`qa.py`): questions (`datasets.py`: JSONL, SQuAD, CMRC2018) are streamed through `RAG.chain`, timing
retrieval, first token and whole answer; an answer is right when it contains a reference answer after
`normalize_answer`, and a question without answers is right when refused.

Heavy libraries (pytrec_eval, the models) are imported only when used.
"""

from rag.eval.corpus import CONTEXTS_FOLDER, DOCS_FOLDER, doc_filename, document_text, ingest_documents, write_documents
from rag.eval.datasets import (
    QAItem,
    RetrievalSet,
    detect_format,
    load_beir,
    load_qa,
    load_retrieval_set,
    read_cmrc,
    read_jsonl_qa,
    read_squad,
    retrieval_set_from_qa,
)
from rag.eval.metrics import (RETRIEVAL_METRICS, contains_answer, exact_match, normalize_answer, percentile,
                              score_run, token_f1)
from rag.eval.qa import QAReport, QAResult, ask_timed, evaluate_qa, ingest_contexts
from rag.eval.retrieval import (
    CHUNKS,
    DEPTH,
    RetrievalReport,
    evaluate_retrieval,
    prepare_store,
    retrieve_run,
    roll_up,
    run_queries,
)

__all__ = [
    "CHUNKS", "CONTEXTS_FOLDER", "DEPTH", "DOCS_FOLDER", "RETRIEVAL_METRICS", "QAItem", "QAReport", "QAResult",
    "RetrievalReport", "RetrievalSet", "ask_timed", "contains_answer", "detect_format", "doc_filename",
    "document_text", "evaluate_qa", "exact_match", "token_f1", "evaluate_retrieval", "ingest_contexts", "ingest_documents", "load_beir",
    "load_qa", "load_retrieval_set", "normalize_answer", "percentile", "prepare_store", "read_cmrc",
    "read_jsonl_qa", "read_squad", "retrieval_set_from_qa", "retrieve_run", "roll_up", "run_queries", "score_run",
    "write_documents",
]
