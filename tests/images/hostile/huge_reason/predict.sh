python3 -u /workspace/predict.py
