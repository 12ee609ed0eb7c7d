"""MLGuard on AWS Lambda: score ALB and CloudFront log objects as they land in S3.

- `mlguard.aws.lambda_handler.handler`: the function S3 `ObjectCreated` events invoke (and a
  schedule, to expire decisions and keep the IP set current between log objects);
- `mlguard.aws.retrain.handler`: the scheduled retraining of the baseline model;
- `mlguard.aws.dynamodb`: the decision store in DynamoDB (the SQLite store's rules);
- `mlguard.aws.settings`: the environment variables both functions read;
- `python -m mlguard.aws.package --out DIR`: the deployment artifact (see docs/deploy-aws.md).

Everything here needs boto3 (`pip install 'mlguard-web[aws]'`; the Lambda runtime has it).
"""
