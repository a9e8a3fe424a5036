@echo off
rem kohya-lite setup for Windows: creates .venv and installs the app (add --dev for the test tools).
rem Versions come from constraints.txt (what CI tested).
rem Torch: set TORCH_SPEC to choose the build (default torch==2.13.0). The default package index serves CPU-only
rem torch for Windows; on a machine with an NVIDIA GPU set TORCH_INDEX_URL to PyTorch's CUDA wheel index (the
rem --index-url that pytorch.org's "Get started" page shows for your CUDA version) before running this script.
setlocal EnableDelayedExpansion
cd /d "%~dp0"
where python >nul 2>nul || (echo Python 3.10+ is needed: install it from python.org and run setup.bat again. & exit /b 1)
if not exist .venv\Scripts\python.exe (
  echo ==^> creating .venv
  python -m venv .venv || exit /b 1
  .venv\Scripts\python -m pip install -q --upgrade pip
)
set GPU=0
where nvidia-smi >nul 2>nul && nvidia-smi >nul 2>nul && set GPU=1
if "%TORCH_SPEC%"=="" set TORCH_SPEC=torch==2.13.0
set TORCH_INDEX=
if not "%TORCH_INDEX_URL%"=="" set TORCH_INDEX=--index-url %TORCH_INDEX_URL%
.venv\Scripts\python -c "import torch" >nul 2>nul
if errorlevel 1 (
  if "!GPU!"=="1" if "%TORCH_INDEX_URL%"=="" (
    echo NOTE: an NVIDIA GPU is present, but TORCH_INDEX_URL is not set, so torch comes from the default index,
    echo       which has CPU-only builds for Windows. For GPU training set TORCH_INDEX_URL to PyTorch's CUDA wheel
    echo       index ^(pytorch.org, Get started^), delete .venv and run setup.bat again.
  )
  echo ==^> installing !TORCH_SPEC! !TORCH_INDEX!
  .venv\Scripts\python -m pip install -q !TORCH_SPEC! !TORCH_INDEX! || exit /b 1
)
set EXTRAS=wd14
if "!GPU!"=="1" set EXTRAS=wd14-gpu
if "%1"=="--dev" set EXTRAS=!EXTRAS!,dev
echo ==^> installing kohya-lite[!EXTRAS!]
.venv\Scripts\python -m pip install -q -c constraints.txt -e .[!EXTRAS!] || exit /b 1
echo ==^> ready
