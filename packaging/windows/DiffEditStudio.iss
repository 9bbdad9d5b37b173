; Inno Setup 6 script: a per-user or all-users installer for the PyInstaller one-folder build.
; Build the bundle first on Windows (see packaging/README.md), then:
;   iscc /DSourceDir=..\..\build\dist\DiffEditStudio packaging\windows\DiffEditStudio.iss
; To label a CUDA and a CPU build differently: add /DFlavor=cuda or /DFlavor=cpu.

#ifndef SourceDir
  #define SourceDir "..\..\build\dist\DiffEditStudio"
#endif
#ifndef Flavor
  #define Flavor "cpu"
#endif
#define AppName "DiffEdit Studio"
#define AppVersion "0.1.0"
#define AppExe "DiffEditStudio.exe"
#define CliExe "diffedit-studio.exe"

[Setup]
; A fixed AppId lets a newer installer upgrade an older one in place. Do not change it.
AppId={{6B1F2C57-3E0A-4F5B-9D2C-7A3E5B8C1D40}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion} ({#Flavor})
AppPublisher=DiffEdit Studio
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
; Installing for the current user needs no administrator rights; the dialog offers both.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\build\installer
OutputBaseFilename=DiffEditStudio-{#AppVersion}-{#Flavor}-setup
; torch's libraries compress well with LZMA2; solid compression trades build time for size.
Compression=lzma2/max
SolidCompression=yes
LZMANumBlockThreads=4
DiskSpanning=no
WizardStyle=modern
UninstallDisplayIcon={app}\{#AppExe}
; The bundle lives in Program Files; models and settings live in the user's own folders
; (%LOCALAPPDATA%\DiffEditStudio) and survive uninstalling and upgrades.
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the diffedit-studio command to PATH"; GroupDescription: "Command line:"; Flags: unchecked

[Files]
; The whole one-folder build: both executables and the shared _internal folder.
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{group}\{cm:UninstallProgram,{#AppName}}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Registry]
Root: HKA; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; \
    ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NotOnPath(ExpandConstant('{app}'))

[Run]
; A broken install (missing DLL, antivirus quarantine) shows up here rather than at first use.
Filename: "{app}\{#CliExe}"; Parameters: "--self-test"; StatusMsg: "Checking the installation..."; \
    Flags: runhidden waituntilterminated
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
function NotOnPath(Dir: string): Boolean;
var
  Current: string;
begin
  if not RegQueryStringValue(HKA, 'Environment', 'Path', Current) then
    Current := '';
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Current) + ';') = 0;
end;
