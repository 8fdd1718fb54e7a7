#!/usr/bin/env python3
# A Keeper PAM script, unchanged in shape from Keeper's "Rotate Credential via
# REST API" example: it reads the base64 line from stdin, finds the record
# holding the API token by its title and "calls" the API. This demo prints the
# request instead of sending it (there is no API server here); the secrets it
# prints come out masked as ******** in the RotationResult.
import base64
import json
import sys

api_access_token_title = 'Record with Access Token'
api_access_token_record = None
params = None

for base64_params in sys.stdin:
    params = json.loads(base64.b64decode(base64_params).decode())
    records = json.loads(base64.b64decode(params.get('records')).decode())
    api_access_token_record = next(
        (record for record in records if record['title'] == api_access_token_title), None)
    break

if api_access_token_record is None:
    print(f"# Error: No Record with the access token found. Title: {api_access_token_title}")
    exit(1)

rest_api_service_url = api_access_token_record.get('url')
service_access_token = api_access_token_record.get('password')
new_password = params.get('newPassword')
user_email = params.get('user')

print(f"POST {rest_api_service_url}")
print(f"Authorization: Bearer {service_access_token}")
print(json.dumps({"userEmail": user_email, "newPassword": new_password}))
print(f"records received: {[r['title'] for r in records]}")
