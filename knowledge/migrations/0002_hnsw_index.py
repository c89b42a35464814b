from django.db import migrations


class Migration(migrations.Migration):
    """HNSW (cosine) index for 384-d embeddings, the default model's dimension.

    Embeddings of other dimensions get their own partial expression index when a knowledge base
    with that dimension is created (knowledge.services).
    """

    dependencies = [("knowledge", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX chunk_embedding_hnsw_384 ON knowledge_chunk "
            "USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_dimension = 384;",
            reverse_sql="DROP INDEX IF EXISTS chunk_embedding_hnsw_384;",
        ),
    ]
