"""The online service: bundle loading, the recommender core, the model repository, feedback."""
