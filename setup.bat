@echo off
rem kohya-lite setup for Windows: creates .venv and installs the app (add --dev for the test tools).
rem Set TORCH_SPEC to choose the torch build, e.g. set TORCH_SPEC=torch==2.13.0
setlocal
cd /d "%~dp0"
where python >nul 2>nul || (echo Python 3.10+ is needed: install it from python.org and run setup.bat again. & exit /b 1)
if not exist .venv\Scripts\python.exe (
  echo ==^> creating .venv
  python -m venv .venv || exit /b 1
  .venv\Scripts\python -m pip install -q --upgrade pip
)
.venv\Scripts\python -c "import torch" >nul 2>nul
if errorlevel 1 (
  if "%TORCH_SPEC%"=="" (
    where nvidia-smi >nul 2>nul && (set TORCH_SPEC=torch) || (set TORCH_SPEC=torch==2.13.0)
  )
  echo ==^> installing %TORCH_SPEC%
  .venv\Scripts\python -m pip install -q %TORCH_SPEC% || exit /b 1
)
set EXTRAS=
if "%1"=="--dev" set EXTRAS=[dev]
echo ==^> installing kohya-lite%EXTRAS%
.venv\Scripts\python -m pip install -q -e .%EXTRAS% || exit /b 1
echo ==^> ready
